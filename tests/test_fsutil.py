"""atomic_directory: the new directory appears whole, a failure leaves the old one as it was."""

from __future__ import annotations

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

    # a single file's leftover too (atomic_write_text), here one of this host made by a process that is gone
    path = tmp_path / "faqs.tsv"
    stale = tmp_path / f".faqs.tsv.tmp-{_this_host()}-{process.pid}-0123abcd"
    stale.write_text("half", encoding="utf-8")
    atomic_write_text(path, "whole")
    assert not stale.exists() and path.read_text(encoding="utf-8") == "whole"


def _this_host() -> str:
    from semsim_pg.fsutil import _beside

    return _beside(Path("x"), "tmp").name.split("-")[1]
