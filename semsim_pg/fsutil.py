"""Replacing a directory or a file atomically: readers find the old complete one or the new
complete one, never a half-written mix, and a failed write leaves nothing behind.

Used by FAISS index saves and fine-tuned model saves::

    with atomic_directory(out, overwrite=True) as tmp:
        write_everything_into(tmp)
    # here ``out`` holds exactly what was written into ``tmp``

The block writes into ``tmp``, a fresh directory beside ``out`` (same file system, so the final
rename is atomic). When the block ends normally every file under ``tmp`` is fsynced, then the
directory is renamed to ``out``: an existing ``out`` is first renamed aside and removed only after
the new one is in place (a reader sees the old directory, for an instant nothing, then the new
one). Swaps into one ``out`` take turns (an flock on ``.NAME.swap`` beside it, held for the two
renames only), so writers racing to replace it all succeed and the last one wins. When the block
raises, ``tmp`` is removed and ``out`` is untouched. A process killed
outright (kill -9, the OOM killer) cleans nothing up: the next write beside the same ``out``
removes what it left (:func:`remove_abandoned`), judged by a lock, not by a process id.

The writer holds an ``fcntl.flock`` on a lock file beside ``tmp`` (``.NAME.lock-TOKEN``, the
token shared with ``.NAME.tmp-TOKEN`` and ``.NAME.old-TOKEN``) for its whole life; the kernel
drops it when the process dies, however it dies. A process id alone misjudged a live writer in
another PID namespace of the same host name (Docker ``--network host``, Kubernetes
``hostNetwork``, cloned VMs on a shared disk) as gone, and deleted the folder under it. A
leftover is removed when its lock can be taken and

* the lock file says it was written under this kernel (its boot id): flock is exact there,
  across PID namespaces; or
* otherwise (another kernel: a cloned VM with the same host name on a shared disk, a reboot
  since; NFS, where flock may be local to each client; a lock file never written; a leftover of
  an older semsim, without one) only when nothing in it changed for :data:`ABANDONED_AFTER_S`
  (a day): a live writer touches its files far more often than that.

Leftovers of another host name are never removed. A write killed between the two renames of the
swap leaves ``out`` missing and the old version as ``.NAME.old-TOKEN``: the cleanup puts it back
as ``out`` (with a warning), never deletes it.

:func:`check_output_path` refuses, before any work, a destination that cannot be written, so a
long job never ends in a traceback over a typo in ``--plot`` or ``--out``.

A single file (an exported FAQ, say) is :func:`atomic_write_text`: written beside its path,
fsynced, then put in place with one rename or link.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: leftovers are judged by their age alone
    fcntl = None  # type: ignore[assignment]

from semsim_pg.errors import InvalidInput

__all__ = [
    "ABANDONED_AFTER_S",
    "atomic_directory",
    "atomic_write_text",
    "check_output_path",
    "fsync_path",
    "remove_abandoned",
]

logger = logging.getLogger(__name__)

#: a leftover whose writer's death the lock cannot prove (see the module) is removed only when
#: nothing in it changed for this long
ABANDONED_AFTER_S = 24 * 3600


@contextlib.contextmanager
def atomic_directory(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` when the block succeeds (see the module).

    ``overwrite`` False refuses an existing ``out`` before anything is written (InvalidInput).
    Missing parent directories are created.
    """
    out = Path(out)
    _prepare(out, overwrite)
    with _writer_lock(out) as token:
        tmp = _beside(out, "tmp", token)
        tmp.mkdir()
        try:
            yield tmp
            _fsync_tree(tmp)
            _swap_into_place(tmp, out, _beside(out, "old", token))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_output_path(path: str | Path, what: str, *, directory: bool = False) -> Path:
    """``path`` if something can be written there, else InvalidInput naming ``what`` (an option
    such as ``--plot``) and the fix. Its parent must be an existing directory that takes a new
    file; a file destination (``directory`` False) must not be a directory. Writing is tried,
    with a probe file removed at once: access rights alone are not the answer (root may write
    anywhere by them, yet not into /proc or a read-only mount)."""
    path = Path(path)
    parent = path.parent
    if not directory and path.is_dir():
        raise InvalidInput(f"{what} {path} is a directory: give a file name in it, e.g. {path / 'out.png'}.")
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise InvalidInput(f"{what} {path}: {parent} {problem}. Create the directory first or choose another path.")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=parent)
    except OSError as exc:
        raise InvalidInput(
            f"{what} {path}: cannot write in {parent} ({exc.strerror or exc}). Choose a writable directory."
        ) from exc
    os.close(fd)
    os.unlink(probe)
    return path


def atomic_write_text(path: str | Path, text: str, *, overwrite: bool = False) -> None:
    """Write ``text`` (UTF-8, line endings as given) to ``path`` whole or not at all.

    ``overwrite`` False refuses an existing ``path`` (InvalidInput), also one that appears while
    writing: the finished file is hard-linked into place, which fails rather than replace a file.
    Missing parent directories are created.
    """
    path = Path(path)
    _prepare(path, overwrite)
    with _writer_lock(path) as token:
        _write_file(path, _beside(path, "tmp", token), text, overwrite)


def _write_file(path: Path, tmp: Path, text: str, overwrite: bool) -> None:
    # os.open with a mode (not mkstemp's 0600) gives the file the permissions the umask allows
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _exists(path) from None
            tmp.unlink()
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _prepare(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, make its parents, and remove leftovers of
    writes to ``out`` whose process died (:func:`remove_abandoned`)."""
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise _exists(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out)


def _host() -> str:
    # the host name hashed to 8 hex digits: a fixed shape, so a name parses back unambiguously
    # whatever dots and dashes the host name (or ``out``'s name) holds
    return hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]


def _beside(out: Path, kind: str, token: str) -> Path:
    """``.NAME.KIND-TOKEN`` beside ``out`` (same file system: the final rename is atomic)."""
    return out.parent / f".{out.name}.{kind}-{token}"


def _boot_id() -> str:
    """This kernel's boot id ("" where unknown): equal in every container and PID namespace of one
    running kernel, different on another machine, a cloned VM, or after a reboot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


@contextlib.contextmanager
def _writer_lock(out: Path) -> Iterator[str]:
    """Hold the lock of a write to ``out`` for the block; yield the token (``HOST-PID-RANDOM``)
    that names its temporary and old entries, so a later writer can find the lock of each. The
    host and process in it only make the names unique and readable: the lock decides."""
    token = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lock = _beside(out, "lock", token)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if fcntl is not None:
            # blocking: a cleaner may hold this new lock for an instant, to find it young and leave it
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{_boot_id()}\n".encode("ascii"))
        yield token
    finally:
        # unlinked while still held: a cleaner that opened it meanwhile finds nothing left to judge
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)  # releases the lock


def _process_alive(pid: int) -> bool:
    if pid <= 0:  # not a name this module made (kill(0) would signal a process group): leave it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_abandoned(out: str | Path) -> list[Path]:
    """Remove what writes to ``out`` left beside it when their process was killed before it could
    clean up (a temporary folder with a model's checkpoints, an old version renamed aside, their
    lock); return what was removed. Only leftovers whose writer is gone (the module says how that
    is judged): never one that a live process (this one included) still writes, nor one of
    another host name. An old version whose ``out`` is missing (a write killed between its two
    renames) is put back as ``out``."""
    out = Path(out)
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old|lock)-(([0-9a-f]{{8}})-(\d+)-[0-9a-f]{{8}})")
    host = _host()
    writes: dict[str, dict[str, Path]] = {}
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is not None and match[3] == host:
            writes.setdefault(match[2], {})[match[1]] = entry
    removed: list[Path] = []
    for token, left in writes.items():
        abandoned, fd = _claim(_beside(out, "lock", token), [p for kind, p in left.items() if kind != "lock"], token)
        if not abandoned:
            continue
        try:
            removed += _clean_up(out, left, pid=token.split("-")[1])
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _claim(lock: Path, entries: list[Path], token: str) -> tuple[bool, int | None]:
    """Whether a write's leftovers are abandoned (False also when that cannot be proven), and
    the lock file, open and held, to close once they are removed (None: there is none)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        # no lock: an older semsim's leftover (or one killed before it made its lock, when it had
        # nothing yet): a process id proves nothing across PID namespaces, so age decides
        pid = int(token.split("-")[1])
        return not _process_alive(pid) and _quiet(entries), None
    except OSError:
        return False, None
    exact = False
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its writer lives (or the lock cannot be taken here: leave it)
            os.close(fd)
            return False, None
        if os.fstat(fd).st_nlink == 0:
            # its writer finished (it unlinks its lock last, while holding it) after we opened it:
            # what we listed beside it is gone or going, and not ours to remove or report
            os.close(fd)
            return False, None
        # flock is exact within one kernel, whatever the PID namespace; the writer said which
        written = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        exact = bool(written) and written == _boot_id()
    if exact or _quiet([*entries, lock]):
        return True, fd
    os.close(fd)
    return False, None


def _quiet(paths: list[Path]) -> bool:
    """Whether nothing in ``paths`` (folders walked) changed for :data:`ABANDONED_AFTER_S`."""
    newest = 0.0
    for path in paths:
        with contextlib.suppress(OSError):
            newest = max(newest, path.lstat().st_mtime)
        if path.is_dir() and not path.is_symlink():
            for folder, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    with contextlib.suppress(OSError):
                        newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return time.time() - newest >= ABANDONED_AFTER_S


def _clean_up(out: Path, left: dict[str, Path], *, pid: str) -> list[Path]:
    """Remove an abandoned write's entries (its lock last); an old version with ``out`` missing is
    put back instead."""
    removed: list[Path] = []
    old = left.get("old")
    if old is not None:
        # under the swap lock: ``out`` is missing for an instant in a live writer's swap too
        with _swap_lock(out):
            missing = not (out.exists() or out.is_symlink())
            if missing:
                try:
                    os.rename(old, out)
                except OSError as exc:
                    logger.warning(
                        "%s is missing and its previous version is %s, which could not be put back (%s)", out, old, exc
                    )
                    return removed  # never delete the only complete copy
        if missing:
            logger.warning(
                "%s was missing: a write killed between its two renames (process %s) left its previous version "
                "as %s, now put back",
                out,
                pid,
                old,
            )
            del left["old"]
    for kind in ("old", "tmp", "lock"):
        entry = left.get(kind)
        if entry is None:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        if kind != "lock" and not entry.exists():
            logger.warning("removed %s, left beside %s by process %s that ended before it finished", entry, out, pid)
            removed.append(entry)
    return removed


def _exists(path: Path) -> InvalidInput:
    return InvalidInput(f"{path} exists already: remove it, choose another path, or allow overwriting.")


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a directory's data (a directory: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                fsync_path(path)
        fsync_path(folder)


def _swap_into_place(tmp: Path, out: Path, aside: Path) -> None:
    # serialised with every other swap into ``out``: two writers' renames interleaved failed with
    # ENOTEMPTY (one's new ``out`` already back) or ENOENT (its ``out`` renamed aside by the other),
    # leaving a whole old copy behind; under the lock the last one wins
    with _swap_lock(out):
        old: Path | None = None
        if out.exists() or out.is_symlink():
            old = aside
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old is not None:
                os.rename(old, out)
            raise
        fsync_path(out.parent)
    if old is not None:  # removed outside the lock: nobody else looks at it
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def _swap_lock(out: Path) -> Iterator[None]:
    """Hold ``.NAME.swap`` beside ``out`` (flock) for the block: the two renames of a swap, and a
    cleanup's putting an old version back, never interleave with another's. The file is removed
    when released; a waiter that then holds the removed file's lock takes the new one instead."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = out.parent / f".{out.name}.swap"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                held, current = os.fstat(fd), os.stat(path)
                same = (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        # unlinked while held, so a process killed here leaves no file; one killed inside the block
        # leaves an empty file that the next swap takes and removes
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
