"""A search costs one round trip to PostgreSQL in the common case, and a remembered collection
that changed behind the store's back is never searched as it was.

Round trips are counted on the wire: libpq's trace of every pooled connection the store checks
out (psycopg's ``PGconn.trace``), where each message batch the client sends ends in a ``Sync``
(extended protocol: a statement with parameters) or is a ``Query`` (simple protocol: BEGIN,
COMMIT, a pool's ping). Nothing here depends on timing.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg.store import DocumentStore, QueryVector

DOCS = [
    ("cat", "The cat sleeps on the warm windowsill.", {"kind": "pet"}),
    ("dog", "A dog barks at the postman every morning.", {"kind": "pet"}),
    ("fish", "Goldfish swim slowly around their glass bowl.", {"kind": "pet"}),
    ("rain", "Heavy rain is expected over the mountains tonight.", {"kind": "weather"}),
    ("sun", "A sunny afternoon with a light breeze from the sea.", {"kind": "weather"}),
    ("tax", "File your tax return before the end of April.", {"kind": "office"}),
]
_SENT = re.compile(r"^F\t\d+\t(Query|Sync)\b", re.MULTILINE)


class Wire:
    """The round trips of every connection the engine hands out while counting."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.file = tempfile.TemporaryFile()
        self.statements: list[str] = []

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        from psycopg import pq

        dbapi_connection.pgconn.trace(self.file.fileno())
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.pgconn.untrace()

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    @contextlib.contextmanager
    def count(self) -> Iterator[Wire]:
        self.file.seek(0)
        self.file.truncate()
        self.statements.clear()
        # First among the checkout listeners, so that a ping of the pool is counted too.
        sa.event.listen(self.engine, "checkout", self._checkout, insert=True)
        sa.event.listen(self.engine, "checkin", self._checkin)
        sa.event.listen(self.engine, "before_cursor_execute", self._statement)
        try:
            yield self
        finally:
            sa.event.remove(self.engine, "checkout", self._checkout)
            sa.event.remove(self.engine, "checkin", self._checkin)
            sa.event.remove(self.engine, "before_cursor_execute", self._statement)

    @property
    def round_trips(self) -> int:
        self.file.seek(0)
        return len(_SENT.findall(self.file.read().decode("utf-8", "replace")))


@pytest.fixture()
def filled(store, collection_name) -> str:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, DOCS)
    return collection_name  # type: ignore[no-any-return]


def test_a_search_with_a_given_vector_is_one_round_trip(store, filled, encoder) -> None:  # type: ignore[no-untyped-def]
    name = filled
    query = QueryVector(encoder.encode_query("a kitten naps in the sun"), encoder.name)
    wire = Wire(store.engine)
    store.search(name, query, 3)  # the first search reads the collection and sets the session up
    with wire.count():
        hits = store.search(name, query, 3)
    assert hits[0].external_id == "cat"
    assert wire.round_trips == 1, wire.statements
    assert len(wire.statements) == 1

    # Every kind of search that finds something: one statement each, and the same hits as before.
    cases: list[dict[str, Any]] = [
        {"mode": "hybrid"},
        {"mode": "lexical"},
        {"filter": {"kind": "weather"}},
        {"min_similarity": 0.1},
        {"exact": True},
    ]
    for options in cases:
        text = "the cat sleeps in the sun"
        given = query if options.get("mode") != "lexical" else text
        store.search(name, given, 3, text=text if given is query and "mode" in options else None, **options)
        with wire.count():
            again = store.search(name, given, 3, text=text if given is query and "mode" in options else None, **options)
        assert again, options
        assert wire.round_trips == 1, (options, wire.statements)

    # Another ef_search sets the session once (one more statement), then costs nothing again.
    with wire.count():
        store.search(name, query, 3, ef_search=77)
    assert wire.round_trips == 2
    with wire.count():
        store.search(name, query, 3, ef_search=77)
    assert wire.round_trips == 1
    with wire.count():
        store.search(name, query, 3)
    assert wire.round_trips == 2
    with pytest.raises(Exception, match="ef_search must be between 1 and 1000"):
        store.search(name, query, 3, ef_search=0)


def test_the_session_settings_are_the_ones_asked_for(store, filled, encoder) -> None:  # type: ignore[no-untyped-def]
    """pgvector's settings come from the session now, not from each search: check what the
    server holds on the connection a search just used."""
    name = filled
    query = encoder.encode_query("rain in the hills")
    store.search(name, query, 2, ef_search=123)
    with store.engine.connect() as conn:  # the pool is LIFO: the connection the search used
        assert conn.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "123"
        assert conn.execute(sa.text("SHOW hnsw.iterative_scan")).scalar() == store.settings.iterative_scan
    store.search(name, query, 2)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SHOW hnsw.ef_search")).scalar() == str(store.settings.ef_search)


def test_empty_results_and_similar_cost_one_more_round_trip(store, filled, encoder) -> None:  # type: ignore[no-untyped-def]
    name = filled
    query = encoder.encode_query("tax forms")
    wire = Wire(store.engine)
    store.search(name, query, 3)
    with wire.count():  # nothing found: is the collection still the one remembered? (one more question)
        assert store.search(name, query, 3, filter={"kind": "nothing"}) == []
    assert wire.round_trips == 2
    with wire.count():  # the stored vector, then the search
        assert store.similar(name, "dog", 2)[0].external_id in {"cat", "fish"}
    assert wire.round_trips == 2


def test_a_collection_dropped_and_created_again_elsewhere_is_never_searched_as_it_was(  # type: ignore[no-untyped-def]
    store, collection_name, encoder
) -> None:
    """Another process (here: another store, and plain SQL) changes what this store remembers."""
    name = collection_name
    store.create_collection(name)
    store.upsert(name, DOCS[:3])
    query = encoder.encode_query("a kitten naps")
    assert store.search(name, query, 1)[0].external_id == "cat"
    old_id = store._remembered(name).id

    other = DocumentStore(encoder=encoder, migrate=True)
    other.drop_collection(name)
    other.create_collection(name)
    other.upsert(name, [("rain", DOCS[3][1]), ("sun", DOCS[4][1])])
    hits = store.search(name, query, 3)  # the remembered id is gone: read again, search the new one
    assert sorted(h.external_id for h in hits) == ["rain", "sun"]
    assert store._remembered(name).id != old_id
    assert store.similar(name, "sun", 1)[0].external_id == "rain"

    other.drop_collection(name)
    other.create_collection(name)
    other.upsert(name, DOCS[5:])
    assert [h.external_id for h in store.similar(name, "tax", 1)] == []  # a document of the new one
    other.drop_collection(name)
    from semsim_pg.errors import CollectionNotFound

    with pytest.raises(CollectionNotFound):
        store.search(name, query, 1)


def test_a_changed_language_or_model_is_seen_by_the_next_search(store, collection_name, encoder) -> None:  # type: ignore[no-untyped-def]
    name = collection_name
    store.create_collection(name)
    store.upsert(name, DOCS)
    assert store.search(name, "windowsill", 1, mode="lexical")[0].external_id == "cat"
    coll = store.get_collection(name)
    with store.engine.begin() as conn:  # what another process's set_text_search_config commits
        conn.execute(
            sa.text("UPDATE semsim.collections SET text_search_config = 'simple' WHERE id = :c"), {"c": coll.id}
        )
    assert store.search(name, "the", 1, mode="lexical")[0].external_id in {"cat", "dog", "rain"}  # no stop words now
    assert store._remembered(name).text_search_config == "simple"

    # A model switch (what `semsim reembed` commits): the remembered model no longer matches, so
    # the search reads the collection again and refuses a query vector of the old model.
    from semsim_pg.errors import ModelMismatch

    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE semsim.collections SET model_name = 'another/model' WHERE id = :c"), {"c": coll.id}
        )
    with pytest.raises(ModelMismatch):
        store.search(name, QueryVector(np.asarray(encoder.encode_query("cat")), encoder.name), 1)
