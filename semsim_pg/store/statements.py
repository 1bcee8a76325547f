"""Search statements: compiled once, run on the driver.

A search repeats an earlier one's statement with another vector, so it pays neither the
building of the SQLAlchemy expressions nor their compilation (together about as much client
time as the round trip): :func:`compiled` keeps them by what they were built from.

:func:`fetch` runs one on the psycopg connection under the pooled SQLAlchemy one: SQLAlchemy
checks the connection out and back in, owns the transaction and its settings, but its result
machinery (cursor metadata, row objects) cost more client CPU than the driver's whole execution.
A statement whose plan does not depend on its values (the plain semantic search: the vector is
a parameter of the ``ORDER BY``, and PostgreSQL's generic plan still orders by the HNSW index)
is a server-side prepared statement, parsed and planned once per connection; its rows come back
in binary (no text formatting of floats on the server, no parsing here). One whose best plan
depends on its values (a metadata filter, the words of a lexical search) is planned for its
values each time. Driver errors come out as the engine's would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.abc import Buffer
from psycopg.types.json import JsonbBinaryLoader
from sqlalchemy.engine import Connection

from semsim_pg.db import driver_error, vector_connection

__all__ = ["Compiled", "compiled", "fetch"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A search statement compiled for the driver: its SQL, the values of every parameter but
    the vector ``q``, processed as SQLAlchemy would (JSON filters serialised), and whether to
    prepare it (see the module's notes): True for a statement whose parameters are only the
    vector and values that do not change its best plan, False (planned for its values each
    time) when a filter or the query's words are parameters."""

    sql: str
    params: dict[str, Any]
    prepare: bool


#: compiled statements, by what they were built from (oldest first)
_STATEMENTS: dict[tuple[Any, ...], Compiled] = {}
_STATEMENTS_MAX = 256
_statements_lock = threading.Lock()


def compiled(
    key: tuple[Any, ...], build: Callable[[], sa.Select[Any]], dialect: sa.Dialect, *, prepare: bool
) -> Compiled:
    """The statement ``build()`` makes, compiled for ``dialect``, by ``key`` (what it is built
    from, the vector aside): built and compiled only the first time."""
    found = _STATEMENTS.get(key)
    if found is None:
        found = _compile(build(), dialect, prepare=prepare)
        with _statements_lock:
            while len(_STATEMENTS) >= _STATEMENTS_MAX:
                _STATEMENTS.pop(next(iter(_STATEMENTS)))  # the oldest
            _STATEMENTS[key] = found
    return found


def _compile(statement: sa.Select[Any], dialect: sa.Dialect, *, prepare: bool) -> Compiled:
    # render_postcompile writes the literal_execute values (collection, model, k) into the SQL.
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params: dict[str, Any] = {}
    for name, value in compiled.params.items():
        if name == "q":
            continue
        processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        params[name] = processor(value) if processor is not None else value
    return Compiled(str(compiled), params, prepare)


def fetch(conn: Connection, compiled: Compiled, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The statement's rows, run by psycopg on ``conn``'s own DBAPI connection (inside the
    transaction ``conn`` holds, if any); errors come out as the engine's would
    (:func:`semsim_pg.db.driver_error`), so callers, :func:`semsim_pg.db.read`'s retry and the
    pool see no difference."""
    raw = _search_connection(conn)
    sql = compiled.sql
    try:
        try:
            rows: list[tuple[Any, ...]] = raw.execute(sql, params, prepare=compiled.prepare, binary=True).fetchall()
            return rows
        except psycopg.errors.FeatureNotSupported as exc:
            # "cached plan must not change result type": a column the statement reads changed
            # its type (a migration) since the statement was prepared on this connection. Forget
            # the connection's prepared statements (psycopg sees the DEALLOCATE ALL and forgets
            # them too) and run it again, prepared afresh; inside a transaction the failure has
            # aborted it, and the caller must start again.
            if not raw.autocommit or "cached plan" not in str(exc):
                raise
            logger.info("search statement prepared before a schema change: preparing it again")
            raw.execute("DEALLOCATE ALL")
            rows = raw.execute(sql, params, prepare=compiled.prepare, binary=True).fetchall()
            return rows
    except psycopg.Error as exc:
        raise driver_error(conn, raw, sql, exc) from exc


_JSON_DECODE = json.JSONDecoder().decode


class _JsonbBinaryLoader(JsonbBinaryLoader):
    """jsonb in binary (a version byte, then the text), decoded as UTF-8 (PostgreSQL's JSON
    always is) without ``json.loads``' guess of the encoding, which cost as much as the decoding
    of a hit's metadata."""

    def load(self, data: Buffer) -> Any:
        if data and data[0] != 1:
            return super().load(data)  # a format this loader does not know: psycopg's error
        return _JSON_DECODE(bytes(data[1:]).decode("utf-8"))


def _search_connection(conn: Connection) -> Any:
    """The psycopg connection under ``conn`` with pgvector's types, and the jsonb loader of the
    search's binary rows (only binary results use it: SQLAlchemy's reads stay in text)."""
    raw = vector_connection(conn)
    if not getattr(raw, "_semsim_search", False):
        raw.adapters.register_loader("jsonb", _JsonbBinaryLoader)
        raw._semsim_search = True
    return raw
