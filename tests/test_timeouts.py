"""Statements PostgreSQL cancels (lock_timeout, statement_timeout) end in one line naming the
timeout and the fix. Before: search, similar and delete raised SQLAlchemy's OperationalError
(LockNotAvailable, QueryCanceled) with the SQL; an ingest said "the database connection was lost
... when the server is back"; a timeout on a new connection's first statement said "Cannot
connect to PostgreSQL"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from semsim_pg import DocumentStore, QueryCanceled
from semsim_pg.db import connect


def _store_with(store: DocumentStore, encoder: Any, options: str) -> DocumentStore:
    """A store whose sessions start with ``options`` (as PGOPTIONS would give them)."""
    url = store.engine.url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    return DocumentStore(url=url, encoder=encoder, migrate=False)


@contextmanager
def _locked(engine: sa.Engine, tables: str) -> Iterator[None]:
    """Another session holds ``tables`` in ACCESS EXCLUSIVE mode meanwhile."""
    with engine.connect() as blocker:
        blocker.execute(sa.text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            blocker.rollback()


def test_a_lock_timeout_is_query_canceled_naming_the_setting(store, encoder, collection_name) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, [("a", "a cat sleeps on the sofa"), ("b", "stock markets fell today")])
    waiting = _store_with(store, encoder, "-c lock_timeout=200")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("search", lambda: waiting.search(collection_name, "a kitten", k=1)),
        ("hybrid search", lambda: waiting.search(collection_name, "a kitten", k=1, mode="hybrid")),
        ("similar", lambda: waiting.similar(collection_name, "a", k=1)),
        ("delete", lambda: waiting.delete(collection_name, ["b"])),
        ("upsert", lambda: waiting.upsert(collection_name, [("c", "rain is expected tomorrow")])),
    ]
    try:
        assert waiting.search(collection_name, "a kitten", k=1)[0].external_id == "a"
        with _locked(store.engine, "semsim.documents, semsim.embeddings"):
            for name, call in calls:
                with pytest.raises(QueryCanceled) as error:
                    call()
                message = str(error.value)
                assert len(message.splitlines()) == 1, name
                assert "lock timeout" in message and "raise lock_timeout" in message, (name, message)
                assert "lost" not in message and "Cannot connect" not in message, (name, message)
                if name == "upsert":
                    assert "the first 0 documents were committed" in message, message
    finally:
        waiting.close()
    # nothing was half-written, and the same calls work once the lock is gone
    assert store.count(collection_name) == 2
    assert store.search(collection_name, "a kitten", k=1)[0].external_id == "a"


def test_a_statement_timeout_is_query_canceled(store) -> None:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        conn.execute(sa.text("SET statement_timeout = 50"))
        with pytest.raises(QueryCanceled, match=r"statement timeout\): .*Raise statement_timeout") as error:
            conn.execute(sa.text("SELECT pg_sleep(5)"))
        assert len(str(error.value).splitlines()) == 1
        conn.rollback()
        conn.execute(sa.text("RESET statement_timeout"))


def test_a_timeout_on_a_new_connection_is_not_cannot_connect(store, encoder) -> None:  # type: ignore[no-untyped-def]
    """A new connection's first statement (putting pgvector's schema on the search_path) waits
    for pg_extension: a lock timeout there said "Cannot connect to PostgreSQL"."""
    waiting = _store_with(store, encoder, "-c lock_timeout=200")
    try:
        with _locked(store.engine, "pg_catalog.pg_extension"):
            with pytest.raises(QueryCanceled, match="lock timeout") as error:
                connect(waiting.engine)
        assert "Cannot connect" not in str(error.value)
        with connect(waiting.engine) as conn:  # and connects once the lock is gone
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        waiting.close()
