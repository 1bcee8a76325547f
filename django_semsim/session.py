"""pgvector's search parameters (``hnsw.ef_search``, ``hnsw.iterative_scan``) per connection.

The configured defaults are set once per connection (``connection_created``), so a default
search is one statement, in autocommit or not. A search with other values marks its SQL with a
comment (:func:`search_marker`); the execute wrapper installed on every connection
(``connection.execute_wrappers``, the list behind ``connection.execute_wrapper()``) sees it and
runs that one statement with transaction-scoped values: in autocommit inside a transaction of its
own, in the caller's transaction with the defaults set back right after it.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from django.db.backends.signals import connection_created

from semsim_pg.errors import InvalidQuery
from semsim_pg.settings import ITERATIVE_SCAN_MODES

__all__ = ["connect_session_defaults", "search_marker", "search_parameters", "set_config"]

_MARKER = re.compile(r"/\* semsim ef_search=(\d+) iterative_scan=(\w+) \*/")
#: the values set on each connection, by the connection wrapper (set when the connection opens)
_DEFAULTS_ATTRIBUTE = "semsim_search_defaults"


def search_parameters(ef_search: int | None, iterative_scan: str | None) -> dict[str, str]:
    """Checked ``{"hnsw.ef_search": ..., "hnsw.iterative_scan": ...}``; None takes the setting."""
    from django_semsim.conf import get_config

    config = get_config()
    ef = config.ef_search if ef_search is None else ef_search
    if isinstance(ef, bool) or not isinstance(ef, int) or not 1 <= ef <= 1000:
        raise InvalidQuery(f"ef_search must be a whole number between 1 and 1000, got {ef!r}.")
    mode = config.iterative_scan if iterative_scan is None else iterative_scan
    if mode not in ITERATIVE_SCAN_MODES:
        raise InvalidQuery(f"iterative_scan must be one of {', '.join(ITERATIVE_SCAN_MODES)}, got {mode!r}.")
    return {"hnsw.ef_search": str(ef), "hnsw.iterative_scan": mode}


def search_marker(params: dict[str, str]) -> str:
    """The SQL comment that carries a search's parameters to the execute wrapper (values checked above)."""
    return f"/* semsim ef_search={int(params['hnsw.ef_search'])} iterative_scan={params['hnsw.iterative_scan']} */"


def set_config(connection: Any, params: dict[str, str], *, local: bool) -> None:
    """Set ``params`` through a cursor of its own (the statement's cursor keeps its results)."""
    calls = ", ".join(f"set_config(%s, %s, {'true' if local else 'false'})" for _ in params)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {calls}", [item for pair in params.items() for item in pair])


def _wrapper(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    match = _MARKER.search(sql) if isinstance(sql, str) and "/* semsim " in sql else None
    connection = context["connection"]
    if match is None:
        return execute(sql, params, many, context)
    wanted = {"hnsw.ef_search": match.group(1), "hnsw.iterative_scan": match.group(2)}
    defaults = getattr(connection, _DEFAULTS_ATTRIBUTE, None)
    if defaults is None and not connection.in_atomic_block:
        defaults = _set_defaults(connection)  # a connection opened before the app was ready
    if wanted == defaults:
        return execute(sql, params, many, context)
    if connection.in_atomic_block:
        set_config(connection, wanted, local=True)
        try:
            return execute(sql, params, many, context)
        finally:
            if defaults:
                set_config(connection, defaults, local=True)
    # autocommit: the values last until this statement's own transaction ends. A server-side
    # cursor (iterator()) was declared WITH HOLD in autocommit, so it outlives the commit.
    with transaction.atomic(using=connection.alias, savepoint=False):
        set_config(connection, wanted, local=True)
        return execute(sql, params, many, context)


def _set_defaults(connection: Any) -> dict[str, str] | None:
    """Set the configured values on the session, outside any transaction; None when one is open."""
    from django_semsim.conf import get_config

    if connection.connection is None or connection.in_atomic_block:
        return None
    config = get_config()
    defaults = search_parameters(config.ef_search, config.iterative_scan)
    with connection.connection.cursor() as cursor:  # the DB-API cursor: no wrapper, not in the query log
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', %s, false)",
            [defaults["hnsw.ef_search"], defaults["hnsw.iterative_scan"]],
        )
    if not connection.get_autocommit():
        connection.connection.commit()  # a session value set in a rolled-back transaction would vanish
    setattr(connection, _DEFAULTS_ATTRIBUTE, defaults)
    return defaults


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "postgresql":
        _install(connection)
        setattr(connection, _DEFAULTS_ATTRIBUTE, None)  # a new session: nothing set on it yet
        _set_defaults(connection)


def _install(connection: Any) -> None:
    # appended once: ready() runs again when a test changes INSTALLED_APPS, and the session keeps its values
    if _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_wrapper)


def connect_session_defaults() -> None:
    """Connected in ``AppConfig.ready()`` (which runs no query): connections already open get the
    wrapper now and their defaults before their first search."""
    from django.db import connections

    connection_created.connect(_on_connection_created, dispatch_uid="django_semsim.session_defaults")
    for connection in connections.all(initialized_only=True):
        if connection.vendor == "postgresql":
            _install(connection)
