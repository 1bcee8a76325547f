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
one). When the block raises, ``tmp`` is removed and ``out`` is untouched. A process killed
outright (kill -9, the OOM killer) cleans nothing up: its temporary folder carries its host and
process id in its name, and the next write beside the same ``out`` removes it
(:func:`remove_abandoned`).

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
import uuid
from collections.abc import Iterator
from pathlib import Path

from semsim_pg.errors import InvalidInput

__all__ = ["atomic_directory", "atomic_write_text", "check_output_path", "fsync_path", "remove_abandoned"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_directory(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` when the block succeeds (see the module).

    ``overwrite`` False refuses an existing ``out`` before anything is written (InvalidInput).
    Missing parent directories are created.
    """
    out = Path(out)
    tmp = _temporary_beside(out, overwrite)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap_into_place(tmp, out)
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
    tmp = _temporary_beside(path, overwrite)
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


def _temporary_beside(out: Path, overwrite: bool) -> Path:
    """A fresh name beside ``out`` (same file system: the final rename is atomic), its parents
    made; an existing ``out`` is refused first unless ``overwrite``. Leftovers of writes to ``out``
    whose process died are removed first (:func:`remove_abandoned`)."""
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise _exists(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out)
    return _beside(out, "tmp")


def _host() -> str:
    # the host name hashed to 8 hex digits: a fixed shape, so a name parses back unambiguously
    # whatever dots and dashes the host name (or ``out``'s name) holds
    return hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]


def _beside(out: Path, kind: str) -> Path:
    """``.NAME.KIND-HOST-PID-RANDOM`` beside ``out``: the writer's host and process in the name,
    so that a later writer can tell a folder whose writer was killed (kill -9, the OOM killer, a
    power cut: no cleanup ran) from one still being written."""
    return out.parent / f".{out.name}.{kind}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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
    clean up (a temporary folder with a model's checkpoints, or an old one renamed aside); return
    what was removed. Only leftovers of processes of this host that are gone: never one that a
    live process (this one included) still writes, nor one of another host on a shared disk."""
    out = Path(out)
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)-([0-9a-f]{{8}})-(\d+)-[0-9a-f]{{8}}")
    host = _host()
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or match[1] != host or _process_alive(int(match[2])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        if not entry.exists():
            logger.warning(
                "removed %s, left beside %s by process %s that ended before it finished", entry, out, match[2]
            )
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


def _swap_into_place(tmp: Path, out: Path) -> None:
    old: Path | None = None
    if out.exists() or out.is_symlink():
        old = _beside(out, "old")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    fsync_path(out.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
