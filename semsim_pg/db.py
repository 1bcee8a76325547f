"""Connections, server checks and migrations.

One SQLAlchemy engine per database URL and process. The URL comes from the settings:
``SEMSIM_DATABASE_URL`` when set, else the embedded server's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import URL, make_url

from semsim_pg import queries
from semsim_pg.errors import (
    ConfigurationError,
    ConnectionLost,
    DatabaseUnavailable,
    ExtensionMissing,
    InvalidInput,
    PermissionDenied,
    PoolExhausted,
    QueryCanceled,
    SchemaNotInstalled,
    SchemaTooNew,
)
from semsim_pg.settings import Settings, get_settings

__all__ = [
    "CAN_CREATE_VECTOR_SQL",
    "MIN_PGVECTOR",
    "MIN_PGVECTOR_TEXT",
    "VERSION_TABLE",
    "canceled_error",
    "check_known_revision",
    "connection_lost",
    "current_revision",
    "database_url",
    "downgrade",
    "downgrade_losses",
    "driver_error",
    "ensure_schema",
    "get_engine",
    "head_revision",
    "migrations_dir",
    "parse_url",
    "pgvector_too_old",
    "pgvector_version",
    "privilege_error",
    "read",
    "read_connection",
    "refusal_error",
    "safe_url",
    "server_info",
    "upgrade",
    "vector_connection",
]

logger = logging.getLogger(__name__)

VERSION_TABLE = "semsim_alembic_version"
#: iterative index scans (filtered searches that still return k rows) arrived in pgvector 0.8.0
MIN_PGVECTOR = (0, 8, 0)
MIN_PGVECTOR_TEXT = ".".join(str(part) for part in MIN_PGVECTOR)
# Any number: held while migrations run, so that two processes never migrate at once.
_MIGRATION_LOCK_KEY = 0x53454D53494D
#: PostgreSQL's SQLSTATE insufficient_privilege: "permission denied for table ...", "must be owner of ..."
_INSUFFICIENT_PRIVILEGE = "42501"
#: lock_not_available: "canceling statement due to lock timeout" (lock_timeout)
_LOCK_NOT_AVAILABLE = "55P03"
#: query_canceled: "... due to statement timeout" (statement_timeout), "... due to user request"
_QUERY_CANCELED = "57014"
#: deadlock_detected: two sessions each waited for a lock the other held; one was ended
_DEADLOCK_DETECTED = "40P01"

#: a pooled connection used this recently is handed out without a ping (HikariCP's
#: aliveBypassWindowMs, 500 ms): under steady load no query pays a round trip for its check
PING_AFTER_IDLE_S = 0.5
_LAST_USE = "semsim_last_use"

T = TypeVar("T")
_MASK = "***"  # what SQLAlchemy shows for a hidden password

#: by URL and pool settings: stores with other pool settings get an engine (a pool) of their own
_engines: dict[tuple[str, int, int, float], Engine] = {}
_engines_lock = threading.Lock()
_schema_ok: set[str] = set()
#: a URL with a password (SQLAlchemy's reading: user up to ':', password up to the first '@')
#: and another '@' in what follows it, before the query string
_AT_AFTER_PASSWORD = re.compile(r"[\w+]+://[^:/]*:[^@]*@[^?]*@", re.DOTALL)


def database_url(settings: Settings | None = None) -> str:
    """The SQLAlchemy URL semsim connects to (starts the embedded server when no URL is set)."""
    settings = settings or get_settings()
    if settings.database_url is None:
        from semsim_pg.server import embedded_server_url

        return embedded_server_url(settings.data_dir)
    return normalise_url(settings.database_url)


def parse_url(url: str) -> URL:
    """A PostgreSQL URL (``postgres://``, ``postgresql://`` or a SQLAlchemy one) parsed and
    checked; :class:`ConfigurationError` for anything else. The core and the Django app read
    URLs through this one function.

    Its messages never quote the URL: a malformed one may hold its password anywhere."""
    if _AT_AFTER_PASSWORD.match(url):
        # SQLAlchemy ends the password at its first '@' and reads the rest as the host, port or
        # database: shown, or echoed by a connection error, they would give the rest of it away
        raise ConfigurationError(
            "The database URL (SEMSIM_DATABASE_URL) is not valid: it has another '@' after the one that ends "
            "the password: percent-encode '@' as %40 where it is part of the password or the database name "
            "(postgresql://user:p%40ss@host:5432/dbname)."
        )
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(
            f"The database URL (SEMSIM_DATABASE_URL) is not a database URL: {exc}. "
            "Expected e.g. postgresql://user:password@host:5432/dbname."
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"The database URL (SEMSIM_DATABASE_URL) points at {backend!r}; semsim needs PostgreSQL with "
            "pgvector (postgresql://user:password@host:5432/dbname)."
        )
    return parsed


def normalise_url(url: str) -> str:
    """Accept ``postgres://``, ``postgresql://`` and SQLAlchemy URLs; use the psycopg 3 driver."""
    return parse_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and ``semsim info``: the one before the
    host and a ``?password=`` query parameter (libpq takes either)."""
    if _AT_AFTER_PASSWORD.match(url):  # parse_url refuses it: SQLAlchemy would show part of the password
        return "<unparseable URL>"
    try:
        parsed = make_url(url)
        if "password" in parsed.query:
            parsed = parsed.update_query_dict({"password": _MASK})
        return parsed.render_as_string(hide_password=True).replace(f"password={quote(_MASK)}", f"password={_MASK}")
    except Exception:  # pragma: no cover - only for display
        return "<unparseable URL>"


def get_engine(settings: Settings | None = None, *, url: str | None = None) -> Engine:
    """The process-wide engine for the configured (or given) database, its pool sized by the
    settings (``pool_size``, ``pool_max_overflow``, ``pool_timeout``): one per URL and pool
    settings, shared by every store that asks for the same."""
    settings = settings or get_settings()
    embedded = url is None and settings.embedded
    url = normalise_url(url) if url else database_url(settings)
    key = (url, settings.pool_size, settings.pool_max_overflow, settings.pool_timeout)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = sa.create_engine(
                url,
                pool_size=settings.pool_size,
                max_overflow=settings.pool_max_overflow,
                pool_timeout=settings.pool_timeout,
                # the connection used last is handed out first: it skips the ping and holds the
                # search settings already (and idle extras can be closed by the server's timeouts)
                pool_use_lifo=True,
                connect_args={"connect_timeout": 10, "application_name": "semsim"},
            )
            _ping_idle_connections(engine)
            _translate_errors(engine)
            sa.event.listen(engine, "connect", _see_pgvector)
            if embedded:
                from semsim_pg.server import watch_engine

                watch_engine(engine, settings.data_dir)  # a server that died is started again
            _engines[key] = engine
        return engine


def _after_fork_in_child() -> None:
    # The pooled connections are sockets shared with the parent: a child using them reads the
    # parent's or a sibling's results (gunicorn --preload, Celery prefork, multiprocessing's fork).
    # dispose(close=False) forgets them without closing them under the parent (SQLAlchemy's recipe);
    # the child opens its own on first use.
    global _engines_lock
    _engines_lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _ping_idle_connections(engine: Engine) -> None:
    """A connection the server dropped (restart, failover) is replaced, not handed out: like
    ``pool_pre_ping``, but without the ping's round trip for a connection used moments ago (it
    would double a search's) unless the server has written to it since, which an idle
    connection only sees when the server closed it (a stop, a restart). A read that still meets
    a dead one is retried (:func:`read`)."""
    dialect = engine.dialect

    def used(dbapi_connection: Any, record: Any, *args: Any) -> None:
        record.info[_LAST_USE] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        recent = time.monotonic() - record.info.get(_LAST_USE, 0.0) < PING_AFTER_IDLE_S
        if recent and not _server_wrote(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # every connection of the pool is as old: replace them all, as pool_pre_ping does
                raise sa.exc.InvalidatePoolError(str(exc)) from exc
            raise

    sa.event.listen(engine, "connect", used)
    sa.event.listen(engine, "checkin", used)
    sa.event.listen(engine, "checkout", ping_if_idle)


#: appends pgvector's schema to the session's search_path when the path leaves it out (a URL with
#: options=-csearch_path=..., ALTER ROLE ... SET search_path): semsim's statements name pgvector's
#: type and operators unqualified, as its functions do under their pinned path (migration 0012)
_SEE_PGVECTOR = (
    "SELECT set_config('search_path', concat_ws(', ', nullif(current_setting('search_path'), ''),"
    " quote_ident(n.nspname)), false)"
    " FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace"
    " WHERE x.extname = 'vector' AND n.nspname <> ALL (current_schemas(true))"
)


def _see_pgvector(dbapi_connection: Any, record: Any) -> None:
    """On a new connection: pgvector's schema on the search_path, after the schemas there (one
    round trip per connection, none per statement). In autocommit, so that no rollback undoes it."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute(_SEE_PGVECTOR)
    finally:
        dbapi_connection.autocommit = autocommit


def _translate_errors(engine: Engine) -> None:
    """A statement the role may not run raises :class:`PermissionDenied` (one line, naming the
    role and the fix) instead of SQLAlchemy's ProgrammingError with the SQL and a traceback, one
    PostgreSQL canceled (lock or statement timeout) :class:`QueryCanceled`; a
    connection the server closed under a statement (or its rollback) raises
    :class:`ConnectionLost`, once SQLAlchemy has invalidated it (the pool replaces it)."""

    def translate(context: sa.engine.ExceptionContext) -> None:
        error = refusal_error(context.original_exception, context.engine, context.connection)
        if error is not None:
            raise error from context.sqlalchemy_exception
        # SQLAlchemy counts Ctrl-C and SIGTERM (KeyboardInterrupt under a statement) as a
        # disconnect, rightly: it invalidates the connection, whose statement psycopg canceled.
        # But nothing was lost: let the interruption go on to the caller, which reports it as one.
        interrupted = not isinstance(context.original_exception, Exception)
        if context.is_disconnect and context.engine is not None and not interrupted:
            raise connection_lost(context.engine, context.original_exception) from context.sqlalchemy_exception

    sa.event.listen(engine, "handle_error", translate)
    _track_role(engine)


def _first_line(exc: BaseException, default: str | None = None) -> str:
    """The driver's message (under SQLAlchemy's wrapper, if any), first line; ``default`` (else the
    error's class name) when it has none."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    return (str(orig).strip().splitlines() or [default or type(orig).__name__])[0]


def connection_lost(engine: Engine, exc: BaseException) -> ConnectionLost:
    """The one-line error for a connection the server closed mid-call (``exc``: why)."""
    return ConnectionLost(
        f"The connection to PostgreSQL at {safe_url(str(engine.url))} was lost ({_first_line(exc)}): the server "
        "stopped, restarted or ended the session, and the call was interrupted. Call again when the "
        "server is back: semsim opens new connections by itself."
    )


def driver_error(conn: Connection, raw: Any, sql: str, exc: Exception) -> Exception:
    """``exc``, raised by psycopg itself on ``conn``'s DBAPI connection ``raw`` (a search run on
    the driver, a COPY), as the engine reports a statement's error: a lost connection is
    invalidated (the pool replaces it, :func:`read` reads again) and becomes
    :class:`ConnectionLost`; anything else becomes SQLAlchemy's error (``orig`` the driver's)."""
    dialect = conn.dialect
    if dialect.is_disconnect(cast(Any, exc), raw, None):
        conn.invalidate(exc)
        return connection_lost(conn.engine, exc)
    refused = refusal_error(exc, conn.engine, conn)
    if refused is not None:
        return refused
    # hide_parameters: a vector (384 numbers or so) stays out of the message
    return sa.exc.DBAPIError.instance(
        sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, connection_invalidated=False, dialect=dialect
    )


def privilege_error(
    exc: BaseException, engine: Engine | None = None, connection: Connection | None = None
) -> PermissionDenied | None:
    """``exc`` (SQLAlchemy's error or psycopg's own, from a raw COPY) as a :class:`PermissionDenied`
    when PostgreSQL refused it for want of a privilege, else None. ``connection``, the one refused,
    and ``engine`` tell which role was refused (:func:`_role_name`)."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if getattr(orig, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
        return None
    reason = _first_line(exc, "permission denied")
    return PermissionDenied(
        f"role {_role_name(engine, connection)} lacks a privilege: {reason} (grant it, or use the role that owns semsim's schema)"
    )


def canceled_error(exc: BaseException) -> QueryCanceled | None:
    """``exc`` (SQLAlchemy's error or psycopg's own) as a :class:`QueryCanceled` when PostgreSQL
    canceled the statement (a lock or statement timeout, a cancel request), else None."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    if state not in (_LOCK_NOT_AVAILABLE, _QUERY_CANCELED):
        return None
    reason = _first_line(exc, "canceling statement")
    # PGOPTIONS and ALTER ROLE / DATABASE ... SET are where such a timeout is usually set
    if state == _LOCK_NOT_AVAILABLE:
        fix = (
            "another session held a lock on a table it needs (a migration, an index build, a long transaction, "
            "LOCK TABLE) longer than lock_timeout allows. Call again once that session is done, or raise "
            "lock_timeout (PGOPTIONS='-c lock_timeout=10s', or ALTER ROLE ... SET lock_timeout)"
        )
    elif "statement timeout" in reason:
        fix = (
            "it ran longer than statement_timeout allows. Raise statement_timeout (PGOPTIONS='-c "
            "statement_timeout=60s', or ALTER ROLE ... SET statement_timeout), or call again when the server is "
            "less busy"
        )
    else:
        fix = "someone canceled it (pg_cancel_backend, a cancel request). Call again"
    return QueryCanceled(f"PostgreSQL canceled a statement ({reason}): {fix}. Its transaction was rolled back.")


def refusal_error(
    exc: BaseException, engine: Engine | None = None, connection: Connection | None = None
) -> PermissionDenied | QueryCanceled | None:
    """``exc`` as the one-line error of a statement PostgreSQL refused (:func:`privilege_error`)
    or canceled (:func:`canceled_error`, a deadlock too), else None."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if getattr(orig, "sqlstate", None) == _DEADLOCK_DETECTED:
        return QueryCanceled(
            "PostgreSQL ended a statement that deadlocked with another session (each waited for a lock the other "
            "held: an index build, a migration, a collection dropped meanwhile?); its transaction was rolled back. "
            "Try again."
        )
    return canceled_error(exc) or privilege_error(exc, engine, connection)


#: statements that change current_user (SET [SESSION|LOCAL] ROLE, SET SESSION AUTHORIZATION and
#: their RESETs, RESET ALL, DISCARD ALL): after one, the connection's role is read again
_SETS_ROLE = re.compile(
    r"\s*(?:SET\s+(?:SESSION\s+|(?P<local>LOCAL\s+))?(?:ROLE|SESSION\s+AUTHORIZATION)"
    r"|RESET\s+(?:ROLE|ALL|SESSION\s+AUTHORIZATION)|DISCARD\s+ALL)\b",
    re.IGNORECASE,
)
#: in a connection's info: the role its session set ("session"), the one its open transaction
#: set ("transaction") and what a commit makes the session's ("commit")
_ROLE = "semsim_role"


def _track_role(engine: Engine) -> None:
    """Remember the role a SET ROLE (or the like) gave a connection, for the message of a later
    refusal: the refused connection is then in an aborted transaction and cannot be asked, and
    another connection has the login role (the README tries a reader role with SET ROLE). A SET
    in a transaction lasts until its rollback, a SET LOCAL until its end: followed here by the
    commit and rollback events. One more round trip after such a statement, none otherwise."""

    def after_execute(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        found = _SETS_ROLE.match(statement)
        if found is None:
            return
        state = conn.info.setdefault(_ROLE, {})
        role = _ask_role(cursor.connection)
        if role is None or cursor.connection.info.transaction_status.name != "INTRANS":  # autocommit
            state.clear()
            if role is not None:
                state["session"] = role
            return
        state["transaction"] = role
        if found.group("local"):
            state.pop("commit", None)  # the session keeps its role past this transaction
        else:
            state["commit"] = role

    def commit(conn: Connection) -> None:
        state = _role_state(conn)
        if state:
            if "commit" in state:
                state["session"] = state.pop("commit")
            state.pop("transaction", None)

    def rollback(conn: Connection, *args: Any) -> None:
        # a savepoint's rollback undoes a SET made after it, or none: unknown here, so what the
        # transaction set is forgotten (a refusal then names the session's role)
        state = _role_state(conn)
        if state:
            state.pop("commit", None)
            state.pop("transaction", None)

    sa.event.listen(engine, "after_cursor_execute", after_execute)
    sa.event.listen(engine, "commit", commit)
    sa.event.listen(engine, "rollback", rollback)
    sa.event.listen(engine, "rollback_savepoint", rollback)


def _role_state(conn: Connection) -> dict[str, str] | None:
    """What :func:`_track_role` keeps for ``conn``'s DBAPI connection; None for a connection
    invalidated (lost: its info goes with it, and reading it would raise) or closed."""
    if conn.invalidated or conn.closed:
        return None
    state: dict[str, str] | None = conn.info.get(_ROLE)
    return state


def _ask_role(dbapi_connection: Any) -> str | None:
    """current_user of a psycopg connection that can still run a statement, else None."""
    try:
        if dbapi_connection.closed or dbapi_connection.info.transaction_status.name not in ("IDLE", "INTRANS"):
            return None
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            return str(cursor.fetchone()[0])
    except Exception:  # only for a message: not worth a second error
        return None


def _role_name(engine: Engine | None, connection: Connection | None = None) -> str:
    """The role a refused statement ran as: current_user of the ``connection`` refused when it
    can still answer (autocommit), else the role a SET ROLE on it gave (:func:`_track_role`),
    else current_user of a fresh connection of ``engine`` (the login role, or the URL's
    ``options=-c role=...``)."""
    if connection is not None:
        with contextlib.suppress(Exception):  # a closed or invalidated connection: asked elsewhere
            raw = connection.connection.dbapi_connection
            role = _ask_role(raw) if raw is not None and raw.info.transaction_status.name == "IDLE" else None
            state = _role_state(connection) or {}
            role = role or state.get("transaction") or state.get("session")
            if role is not None:
                return str(role)
    if engine is not None:
        try:
            with engine.connect() as conn:
                return str(conn.execute(sa.text("SELECT current_user")).scalar_one())
        except (sa.exc.SQLAlchemyError, DatabaseUnavailable):  # only for the message: not worth a second error
            pass
    return "in use"


def _server_wrote(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has something to read (a zero-timeout poll, no round
    trip): the end of the stream when the server closed it, else a notice. True when unsure."""
    try:
        if dbapi_connection.closed:
            return True
        readable, _, _ = select.select([dbapi_connection.pgconn.socket], [], [], 0)
    except Exception:  # a connection psycopg calls bad, or no socket: let the ping decide
        return True
    return bool(readable)


def connect(engine: Engine) -> Connection:
    """Open a connection, turning "cannot connect" and "no connection free in the pool" into
    errors that say what to do."""
    try:
        return engine.connect()
    except sa.exc.TimeoutError:
        pool = cast(sa.pool.QueuePool, engine.pool)  # the only pool that times out
        # overflow(): the connections open beyond pool_size, all of max_overflow when it times out
        size, overflow = pool.size(), max(pool.overflow(), 0)
        raise PoolExhausted(
            f"No connection to PostgreSQL at {safe_url(str(engine.url))} was free within {pool.timeout():g} s: all "
            f"{size + overflow} of semsim's pool (pool_size {size} + max_overflow {overflow}) were in use. "
            "Run fewer threads at once, return connections sooner (close what you took from store.engine), or raise "
            "SEMSIM_POOL_SIZE / SEMSIM_POOL_MAX_OVERFLOW (within the server's max_connections)."
        ) from None
    except sa.exc.DBAPIError as exc:
        # a statement of a new connection (pgvector's search_path, the ping) timed out or was
        # refused: the server is there, so "cannot connect" would send the user the wrong way
        refused = refusal_error(exc, engine)
        if refused is not None:
            raise refused from None
        raise DatabaseUnavailable(
            f"Cannot connect to PostgreSQL at {safe_url(str(engine.url))}: {_first_line(exc)}. "
            "Check that the server runs and SEMSIM_DATABASE_URL is right, or unset SEMSIM_DATABASE_URL "
            "to use the embedded server."
        ) from None


def read_connection(engine: Engine) -> Connection:
    """A connection in autocommit, for reads of one statement each: no BEGIN and COMMIT around
    them (two round trips saved per read); the pool restores the isolation level at checkin."""
    return connect(engine).execution_options(isolation_level="AUTOCOMMIT")


def read(engine: Engine, work: Callable[[Connection], T]) -> T:
    """``work`` on a :func:`read_connection`, once more on a fresh connection if the server had
    dropped the one it got (``work`` must only read: it may run twice)."""
    try:
        with read_connection(engine) as conn:
            return work(conn)
    except ConnectionLost as exc:
        logger.info("a pooled connection was dead (%s); reading again on a new one", exc)
    with read_connection(engine) as conn:
        return work(conn)


def vector_connection(conn: Connection) -> Any:
    """The psycopg connection under a SQLAlchemy one, with pgvector's types registered once
    (binary COPY of vectors, vectors fetched as NumPy arrays)."""
    raw = conn.connection.driver_connection
    if raw is None:  # pragma: no cover
        raise RuntimeError("no DBAPI connection")
    if not getattr(raw, "_semsim_vector", False):
        from pgvector.psycopg import register_vector

        try:
            register_vector(raw)  # a query of its own (the type's oid), the first on a new connection
        except conn.dialect.loaded_dbapi.Error as exc:
            raise driver_error(conn, raw, "register_vector", exc) from exc
        raw._semsim_vector = True
    return raw


def pgvector_version(conn: Connection) -> tuple[str | None, str | None]:
    """(installed version, version available to install) of pgvector in this database."""
    row = conn.execute(
        sa.text("SELECT installed_version, default_version FROM pg_available_extensions WHERE name = 'vector'")
    ).first()
    if row is None:
        return None, None
    return row[0], row[1]


def pgvector_too_old(version: str) -> bool:
    """True when a pgvector version (``0.7.4``) is older than :data:`MIN_PGVECTOR`."""
    return tuple(int(part) for part in version.split(".") if part.isdigit()) < MIN_PGVECTOR


def require_pgvector(conn: Connection, *, create: bool = False) -> None:
    """pgvector must be available, recent enough and, with ``create`` (an upgrade, whose first
    revision runs CREATE EXTENSION), installed or creatable by the role: else one line on what
    to do, not the migration's traceback."""
    installed, available = pgvector_version(conn)
    candidate = installed or available
    if candidate is None:
        raise ExtensionMissing(
            f"The pgvector extension is not available on this PostgreSQL server. Install pgvector >= {MIN_PGVECTOR_TEXT} "
            "(https://github.com/pgvector/pgvector#installation) or use the embedded server (unset SEMSIM_DATABASE_URL)."
        )
    if pgvector_too_old(candidate):
        raise ExtensionMissing(
            f"pgvector {candidate} is too old: semsim needs >= {MIN_PGVECTOR_TEXT} for iterative index scans. "
            "Upgrade the extension (ALTER EXTENSION vector UPDATE) after installing a newer pgvector."
        )
    if create and installed is None and not conn.execute(_CAN_CREATE_VECTOR).scalar():
        database, role = conn.execute(sa.text("SELECT current_database(), current_user")).one()
        raise ExtensionMissing(
            f"pgvector is available but not installed in database {database} and role {role} cannot create it: "
            f"have a superuser run CREATE EXTENSION vector; in {database}, then semsim db upgrade"
        )


#: an SQL expression, whether the role may run CREATE EXTENSION vector: a superuser may; anyone
#: else only if the extension is marked trusted (pgvector is not) and the role may create in the
#: database (django_semsim's check asks it too)
CAN_CREATE_VECTOR_SQL = (
    "(coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)"
    " OR (coalesce((SELECT v.trusted FROM pg_available_extension_versions v JOIN pg_available_extensions a"
    "  ON a.name = v.name AND a.default_version = v.version WHERE v.name = 'vector'), false)"
    "  AND has_database_privilege(current_database(), 'CREATE')))"
)
_CAN_CREATE_VECTOR = sa.text(f"SELECT {CAN_CREATE_VECTOR_SQL}")


def server_info(engine: Engine) -> dict[str, Any]:
    with connect(engine) as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        installed, available = pgvector_version(conn)
        revision = _current_revision(conn)
        buffers = conn.execute(queries.shared_buffers_bytes()).scalar_one()
        # semsim's HNSW indexes together: what searches want in shared_buffers (semsim warmup)
        hnsw = conn.execute(queries.hnsw_index_bytes()).scalar_one()
        prewarm = conn.execute(queries.pg_prewarm_installed()).scalar()
    return {
        "database_url": safe_url(str(engine.url)),
        "postgresql": str(version),
        "pgvector": installed,
        "pgvector_available": available,
        "schema_revision": revision,
        "schema_head": head_revision(),
        "shared_buffers_bytes": int(buffers),
        "hnsw_index_bytes": int(hnsw),
        "pg_prewarm": bool(prewarm),
    }


# migrations -------------------------------------------------------------------------------------
def migrations_dir() -> Path:
    """The Alembic scripts: the source tree's ``migrations/`` when running from a checkout, else
    the installed ``semsim_pg.migrations``.

    The checkout comes first because an editable install maps ``semsim_pg.migrations`` to the
    folder it was installed from, which need not be the checkout whose code is running (a second
    worktree on ``PYTHONPATH``): the scripts must belong to the code that runs them.
    """
    source = Path(__file__).resolve().parent.parent
    if (source / "pyproject.toml").is_file() and (source / "migrations" / "env.py").is_file():
        return source / "migrations"
    try:
        import semsim_pg.migrations as package  # mapped from the top-level migrations/ by pyproject.toml

        if package.__file__:
            return Path(package.__file__).parent
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent / "migrations"


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _revisions() -> list[str]:
    """semsim's schema revisions, oldest first."""
    from alembic.script import ScriptDirectory

    return [script.revision for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions()][::-1]


def _current_revision(conn: Connection) -> str | None:
    exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"public.{VERSION_TABLE}"}).scalar()
    if exists is None:
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM public.{VERSION_TABLE}")).scalar()


def current_revision(engine: Engine) -> str | None:
    with connect(engine) as conn:
        return _current_revision(conn)


def _run_alembic(engine: Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    with connect(engine) as conn:
        require_pgvector(conn, create=action == "upgrade")
        # Serialise concurrent migrations across processes; released when the connection closes.
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        try:
            check_known_revision(_current_revision(conn))
            config = _alembic_config(conn)
            try:
                if action == "upgrade":
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)
            except CommandError as exc:
                # Alembic's word for a revision it cannot find or cannot go to from here.
                conn.rollback()
                raise InvalidInput(
                    f"Cannot {action} semsim's schema to {revision!r}: {exc}. Give head, base, a step such as "
                    f"-1, or one of the revisions {', '.join(_revisions())} (semsim db current shows the "
                    "installed one)."
                ) from exc
            conn.commit()
        finally:
            # A failed migration left its transaction aborted: roll it back first, or the unlock
            # fails too (InFailedSqlTransaction) and its traceback buries the real cause.
            conn.rollback()
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                conn.commit()
            except sa.exc.DBAPIError as exc:  # a lost connection: the session's lock went with it
                logger.warning("could not release the migration lock: %s", exc.orig)
    _schema_ok.discard(str(engine.url))


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring semsim's schema up to ``revision`` (creates the pgvector extension if missing)."""
    logger.info("upgrading semsim schema on %s to %s", safe_url(str(engine.url)), revision)
    _run_alembic(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take semsim's schema down to ``revision`` (``base`` removes it). What that drops:
    :func:`downgrade_losses`."""
    logger.info("downgrading semsim schema on %s to %s", safe_url(str(engine.url)), revision)
    _run_alembic(engine, "downgrade", revision)


def check_known_revision(current: str | None) -> None:
    """A revision this semsim does not know was written by a newer one: say so, and never try
    to migrate from it (Alembic's "Can't locate revision" names neither cause nor fix)."""
    if current is None or current in _revisions():
        return
    raise SchemaTooNew(
        f"the database's schema {current} is newer than this semsim (head {head_revision()}): upgrade semsim "
        "(pip install -U semsim), or downgrade the schema with the newer version"
    )


def downgrade_losses(engine: Engine, revision: str) -> list[tuple[str, str]] | None:
    """What a downgrade to ``revision`` (an id, ``base`` or a step such as ``-2``) drops: (revision,
    what its downgrade loses) for each revision it undoes that loses something, newest first,
    from each migration's ``DOWNGRADE_LOSES``. None for a revision Alembic must judge (it
    refuses unknown ones with a message of its own)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config())
    order = _revisions()
    current = current_revision(engine)
    check_known_revision(current)
    if current is None:
        return []
    at = order.index(current)
    if revision == "base":
        target = -1
    elif revision.startswith("-") and revision[1:].isdigit():
        target = at - int(revision[1:])
    elif revision in order:
        target = order.index(revision)
    else:
        return None
    undone = order[max(target, -1) + 1 : at + 1][::-1]
    losses = [(rev, getattr(scripts.get_revision(rev).module, "DOWNGRADE_LOSES", None)) for rev in undone]
    return [(rev, lost) for rev, lost in losses if lost]


def ensure_schema(engine: Engine, *, migrate: bool) -> None:
    """Check that the schema is at head; migrate when allowed, else say how."""
    key = str(engine.url)
    if key in _schema_ok:
        return
    with connect(engine) as conn:
        current = _current_revision(conn)
    check_known_revision(current)
    head = head_revision()
    if current != head:
        if not migrate:
            state = "not installed" if current is None else f"at revision {current}, this semsim needs {head}"
            raise SchemaNotInstalled(
                f"semsim's tables in {safe_url(key)} are {state}. Run `semsim db upgrade` "
                "(or semsim_pg.db.upgrade(engine)) to install or upgrade them."
            )
        upgrade(engine)
    _schema_ok.add(key)
