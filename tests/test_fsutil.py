"""atomic_directory: the new directory appears whole, a failure leaves the old one as it was."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from semsim_pg.errors import InvalidInput
from semsim_pg.fsutil import atomic_directory


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_replaces_the_directory_whole(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("one", encoding="utf-8")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("two", encoding="utf-8")
        assert not out.exists()  # nothing where readers look until the block is done
    assert (out / "a.txt").read_text(encoding="utf-8") == "one"
    assert (out / "sub" / "b.txt").read_text(encoding="utf-8") == "two"

    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("three", encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert _leftovers(tmp_path) == []


def test_failure_keeps_the_old_directory(tmp_path: Path) -> None:
    out = tmp_path / "index"
    out.mkdir()
    (out / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_refuses_an_existing_path_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    with pytest.raises(InvalidInput, match="exists already"), atomic_directory(out):
        pytest.fail("the block must not run")
    assert _leftovers(tmp_path) == []


def test_creates_missing_parents(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "model"
    with atomic_directory(out) as tmp:
        (tmp / "x").write_text("x", encoding="utf-8")
    assert (out / "x").is_file()


def test_atomic_write_text_writes_whole_or_not_at_all(tmp_path: Path) -> None:
    from semsim_pg.fsutil import atomic_write_text

    path = tmp_path / "sub" / "faqs.tsv"
    atomic_write_text(path, "one\r\ntwo\n")
    assert path.read_bytes() == b"one\r\ntwo\n"  # line endings as given
    with pytest.raises(InvalidInput, match="exists already"):
        atomic_write_text(path, "other")
    with pytest.raises(UnicodeEncodeError):  # fails halfway through: the old file stays whole
        atomic_write_text(path, "three" + "\ud800", overwrite=True)
    assert path.read_bytes() == b"one\r\ntwo\n"
    atomic_write_text(path, "four", overwrite=True)
    assert path.read_text(encoding="utf-8") == "four"
    assert sorted(p.name for p in path.parent.iterdir()) == ["faqs.tsv"]


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 (or the OOM killer) runs no cleanup: the temporary folder, with a fine-tuning run's
    checkpoints, stays beside the target until the next write there removes it, never while
    its writer lives."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    from semsim_pg.fsutil import atomic_write_text, remove_abandoned

    out = tmp_path / "model"
    writer = textwrap.dedent(
        """
        import sys, time
        from semsim_pg.fsutil import atomic_directory
        with atomic_directory(sys.argv[1], overwrite=True) as tmp:
            (tmp / "checkpoints").mkdir()
            (tmp / "checkpoints" / "weights.bin").write_bytes(b"0" * 1024)
            print(tmp.name, flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-c", writer, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        busy = process.stdout.readline().strip()
        assert busy.startswith(".model.tmp-") and (tmp_path / busy / "checkpoints").is_dir()
        # another host's leftover on a shared disk, one of another target, and a name of the old
        # shape (no process in it) are not this write's to judge
        foreign = [".model.tmp-00000000-1-abcdef12", ".model-v2.tmp-00000000-1-abcdef12", ".model.tmp-abcdef12"]
        for name in foreign:
            (tmp_path / name).mkdir()
        with atomic_directory(out, overwrite=True) as tmp:  # the writer lives: its folder stays
            (tmp / "a").write_text("a", encoding="utf-8")
        assert (tmp_path / busy / "checkpoints" / "weights.bin").is_file()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (tmp_path / busy).is_dir()  # nothing cleaned up after kill -9
    with caplog.at_level("WARNING", logger="semsim_pg.fsutil"), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "b").write_text("b", encoding="utf-8")
    assert not (tmp_path / busy).exists() and busy in caplog.text and str(process.pid) in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert _leftovers(tmp_path) == sorted(foreign)
    assert remove_abandoned(out) == []

    # a single file's leftover too (atomic_write_text), here one without a lock (an older semsim's)
    # made by a process of this host that is gone: removed once nothing changed in it for a day
    path = tmp_path / "faqs.tsv"
    stale = tmp_path / f".faqs.tsv.tmp-{_host()}-{process.pid}-0123abcd"
    young = tmp_path / f".faqs.tsv.tmp-{_host()}-{process.pid}-4567abcd"
    stale.write_text("half", encoding="utf-8")
    young.write_text("half", encoding="utf-8")
    _age(stale)
    atomic_write_text(path, "whole")
    assert not stale.exists() and young.exists() and path.read_text(encoding="utf-8") == "whole"


def _host() -> str:
    from semsim_pg.fsutil import _host

    return _host()


def _age(*paths: Path) -> None:
    """Make ``paths`` (and everything in them) look untouched for longer than ABANDONED_AFTER_S."""
    import os

    from semsim_pg.fsutil import ABANDONED_AFTER_S

    then = time.time() - ABANDONED_AFTER_S - 60
    for path in paths:
        for inner in [path, *(path.rglob("*") if path.is_dir() else [])]:
            os.utime(inner, (then, then), follow_symlinks=False)


def _dead_pid() -> int:
    """The id of a process that has ended (here: in this PID namespace)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_writer_in_another_pid_namespace_keeps_its_folder(tmp_path: Path) -> None:
    """A writer in another PID namespace of the same host name (Docker --network host, Kubernetes
    hostNetwork, cloned VMs on a shared disk) has a process id that is dead, or someone else's,
    here: judged by it, its folder was deleted under it and it died with FileNotFoundError. Its
    lock decides now. Simulated: a live process holds the lock of a write whose name carries a
    process id that has ended here (what such a writer's looks like from this namespace)."""
    import subprocess
    import sys
    import textwrap

    from semsim_pg.fsutil import _boot_id, remove_abandoned

    out = tmp_path / "model"
    token = f"{_host()}-{_dead_pid()}-abcdef12"
    busy = tmp_path / f".model.tmp-{token}"
    (busy / "checkpoints").mkdir(parents=True)
    (busy / "checkpoints" / "weights.bin").write_bytes(b"0" * 1024)
    lock = tmp_path / f".model.lock-{token}"
    lock.write_text(f"{_boot_id()}\n", encoding="ascii")
    holder = textwrap.dedent(
        """
        import fcntl, sys, time
        with open(sys.argv[1], "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            print("held", flush=True)
            time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        with atomic_directory(out, overwrite=True) as tmp:
            (tmp / "a").write_text("a", encoding="utf-8")
        assert (busy / "checkpoints" / "weights.bin").is_file() and lock.exists()
        _age(busy, lock)  # held, however old: kept
        assert remove_abandoned(out) == [] and busy.is_dir()
    finally:
        process.kill()
        process.wait()
    # the writer is gone (its lock with it) and it ran under this kernel: removed at once, with its lock
    assert remove_abandoned(out) == [busy] and not busy.exists() and not lock.exists()
    assert sorted(p.name for p in out.iterdir()) == ["a"] and _leftovers(tmp_path) == []


def test_a_free_lock_of_another_kernel_waits_for_a_day(tmp_path: Path) -> None:
    """A lock taken freely proves nothing when its writer ran under another kernel (a cloned VM
    with this host name, NFS where flock may be local to each client, a reboot since): its
    leftovers go only once nothing in them changed for ABANDONED_AFTER_S."""
    from semsim_pg.fsutil import remove_abandoned

    out = tmp_path / "model"
    token = f"{_host()}-{_dead_pid()}-abcdef12"
    left = tmp_path / f".model.tmp-{token}"
    left.mkdir()
    (left / "weights.bin").write_bytes(b"0")
    lock = tmp_path / f".model.lock-{token}"
    lock.write_text("another-kernel's-boot-id\n", encoding="ascii")
    assert remove_abandoned(out) == [] and left.is_dir()
    _age(left, lock)
    assert remove_abandoned(out) == [left] and not lock.exists()


def test_a_write_killed_between_its_renames_gets_its_old_version_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed after renaming ``out`` aside and before renaming the new one in: the old version is
    the only complete copy, under ``.NAME.old-TOKEN``. The cleanup puts it back, never deletes it."""
    from semsim_pg.fsutil import _boot_id, remove_abandoned

    out = tmp_path / "model"
    token = f"{_host()}-{_dead_pid()}-abcdef12"
    old = tmp_path / f".model.old-{token}"
    old.mkdir()
    (old / "modules.json").write_text("previous", encoding="utf-8")
    new = tmp_path / f".model.tmp-{token}"
    new.mkdir()
    (new / "modules.json").write_text("next", encoding="utf-8")
    (tmp_path / f".model.lock-{token}").write_text(f"{_boot_id()}\n", encoding="ascii")
    with caplog.at_level("WARNING", logger="semsim_pg.fsutil"):
        assert remove_abandoned(out) == [new]
    assert (out / "modules.json").read_text(encoding="utf-8") == "previous" and _leftovers(tmp_path) == []
    assert "now put back" in caplog.text and old.name in caplog.text
    # with ``out`` there, an old version left aside is what it looks like: removed
    old.mkdir()
    (tmp_path / f".model.lock-{token}").write_text(f"{_boot_id()}\n", encoding="ascii")
    assert remove_abandoned(out) == [old] and (out / "modules.json").read_text(encoding="utf-8") == "previous"


def test_two_writers_of_one_directory_last_one_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes overwriting one ``out`` at once failed now and then with a raw ENOTEMPTY or
    ENOENT from the swap, leaving a whole ``.NAME.old-…`` copy behind for a day. Here the second
    write runs while the first is between its two renames, the moment of that race."""
    import os
    import threading

    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "who").write_text("first", encoding="utf-8")
    rename = os.rename
    errors: list[BaseException] = []

    def write(who: str) -> None:
        try:
            with atomic_directory(out, overwrite=True) as tmp:
                (tmp / "who").write_text(who, encoding="utf-8")
        except BaseException as exc:
            errors.append(exc)

    other = threading.Thread(target=write, args=("b",))

    def rename_then_let_the_other_write(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        rename(src, dst)
        if Path(dst).name.startswith(".out.old-") and not other.is_alive() and other.ident is None:
            other.start()
            other.join(timeout=1)  # it finishes (no lock), or it waits for this swap (the fix)

    monkeypatch.setattr(os, "rename", rename_then_let_the_other_write)
    write("a")
    other.join()
    assert errors == []
    assert (out / "who").read_text(encoding="utf-8") == "b"  # the last one to swap
    assert _leftovers(tmp_path) == []
