"""A search costs one round trip to PostgreSQL in the common case, and a remembered collection
that changed behind the store's back is never searched as it was.

Round trips are counted on the wire: libpq's trace of every pooled connection the store checks
out (psycopg's ``PGconn.trace``), where each message batch the client sends ends in a ``Sync``
(extended protocol: a statement with parameters) or is a ``Query`` (simple protocol: BEGIN,
COMMIT, a pool's ping). Statements too: a search runs on the driver's connection, past
SQLAlchemy's events, so each ``Bind`` (a statement executed) or ``Query`` counts one. Nothing
here depends on timing.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg.errors import InvalidQuery
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
_STATEMENT = re.compile(r"^F\t\d+\t(Query|Bind)\b(.*)$", re.MULTILINE)
_PARSE = re.compile(r"^F\t\d+\tParse\b", re.MULTILINE)


class Wire:
    """The round trips of every connection the engine hands out while counting."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.file = tempfile.TemporaryFile()

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        from psycopg import pq

        dbapi_connection.pgconn.trace(self.file.fileno())
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.pgconn.untrace()

    @contextlib.contextmanager
    def count(self) -> Iterator[Wire]:
        self.file.seek(0)
        self.file.truncate()
        # First among the checkout listeners, so that a ping of the pool is counted too.
        sa.event.listen(self.engine, "checkout", self._checkout, insert=True)
        sa.event.listen(self.engine, "checkin", self._checkin)
        try:
            yield self
        finally:
            sa.event.remove(self.engine, "checkout", self._checkout)
            sa.event.remove(self.engine, "checkin", self._checkin)

    def _trace(self) -> str:
        self.file.seek(0)
        return self.file.read().decode("utf-8", "replace")

    @property
    def round_trips(self) -> int:
        return len(_SENT.findall(self._trace()))

    @property
    def statements(self) -> list[str]:
        """What was sent for each statement executed (a ``Bind`` names a prepared statement)."""
        return [m.group(0) for m in _STATEMENT.finditer(self._trace())]

    @property
    def parsed(self) -> int:
        """Statements the server parsed (and planned): none for a prepared statement run again."""
        return len(_PARSE.findall(self._trace()))


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
    assert len(wire.statements) == 1, wire.statements

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
    with pytest.raises(InvalidQuery, match="ef_search must be a whole number between 1 and 1000"):
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
    store.similar(name, "cat", 2)  # the first on a connection prepares its statement (once)
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


def _search_statements(conn: sa.Connection) -> list[tuple[str, int, int]]:
    """The search statements prepared on this session: (text, generic plans, custom plans)."""
    rows = conn.execute(
        sa.text(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%hits%'"
        )
    ).all()
    return [(r[0], int(r[1]), int(r[2])) for r in rows]


def test_the_search_statement_is_prepared_once_and_its_generic_plan_uses_the_index(store, filled, encoder) -> None:  # type: ignore[no-untyped-def]
    name = filled
    query = QueryVector(encoder.encode_query("a kitten naps in the sun"), encoder.name)
    wire = Wire(store.engine)
    store.search(name, query, 3)
    for _ in range(8):  # past PostgreSQL's five custom plans: the generic plan is cached from here
        with wire.count():
            hits = store.search(name, query, 3)
        assert wire.round_trips == 1
        assert wire.parsed == 0, wire.statements  # executed by name: no Parse, no planning
        assert hits[0].external_id == "cat"
    with store.engine.connect() as conn:  # the pool is LIFO: the connection the searches used
        prepared = _search_statements(conn)
        assert len(prepared) == 1, prepared
        text, generic, custom = prepared[0]
        assert generic + custom >= 9
        # The generic plan (the vector a parameter) can still be answered by the HNSW index: shown
        # with scans and sorts off (what explain(force_index=True) sets), since for six rows the
        # planner rightly prefers to read them all and sort.
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            conn.execute(sa.text(f"SET LOCAL {setting} = off"))
        plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN (GENERIC_PLAN) {text}").scalars())
        conn.rollback()
    assert "embeddings_hnsw" in plan and "Order By" in plan, plan


def test_a_filtered_search_is_planned_for_its_values(store, filled, encoder) -> None:  # type: ignore[no-untyped-def]
    """A metadata filter's selectivity decides whether the index or a scan is best: a generic
    plan (estimated for any value) would choose once for all; such statements are never prepared."""
    name = filled
    query = encoder.encode_query("weather tomorrow")
    for kind in ["weather", "pet", "office"] * 3:
        assert store.search(name, query, 2, filter={"kind": kind})[0].metadata["kind"] == kind
    with store.engine.connect() as conn:
        assert not [s for s in _search_statements(conn) if "@>" in s[0]]


def test_schema_and_index_changes_between_searches_never_leak_a_stale_plan(store, filled, encoder, caplog) -> None:  # type: ignore[no-untyped-def]
    """A prepared statement outlives what it was planned for: an index dropped and built again,
    a column's type changed by a migration (PostgreSQL then refuses the cached plan: "cached plan
    must not change result type"), the collection dropped and created again. Each search after
    gives the right hits."""
    name = filled
    query = QueryVector(encoder.encode_query("a kitten naps in the sun"), encoder.name)
    for _ in range(7):
        assert store.search(name, query, 2)[0].external_id == "cat"

    store.build_index(name, rebuild=True)  # the plan's index is dropped and another one built
    assert store.search(name, query, 2)[0].external_id == "cat"

    # Another process's migration changes the type of a column the search returns (another
    # engine: on the search's own connection psycopg would forget its statements at the ALTER).
    migrator = sa.create_engine(store.engine.url)
    try:
        with migrator.begin() as conn:
            conn.execute(sa.text("ALTER TABLE semsim.embeddings ALTER COLUMN passage TYPE bigint"))
        with caplog.at_level(logging.INFO, logger="semsim_pg.store.statements"):
            hits = store.search(name, query, 2)
        assert hits[0].external_id == "cat" and hits[0].passage == 0
        assert "preparing it again" in caplog.text
    finally:
        with migrator.begin() as conn:
            conn.execute(sa.text("ALTER TABLE semsim.embeddings ALTER COLUMN passage TYPE integer"))
        migrator.dispose()
    assert store.search(name, query, 2)[0].external_id == "cat"

    other = DocumentStore(encoder=encoder, migrate=True)
    other.drop_collection(name)
    other.create_collection(name)
    other.upsert(name, DOCS[3:5])
    assert {h.external_id for h in store.search(name, query, 2)} == {"rain", "sun"}


def test_a_connection_lost_under_a_search_is_replaced_and_the_search_runs_again(  # type: ignore[no-untyped-def]
    store, filled, encoder, monkeypatch
) -> None:
    """The search runs on the driver's connection: its errors still reach SQLAlchemy's pool (the
    dead connection invalidated) and the store's retry, as a SQLAlchemy error would."""
    from semsim_pg import db

    name = filled
    query = QueryVector(encoder.encode_query("a kitten naps in the sun"), encoder.name)
    store.search(name, query, 2)
    # The pool must hand out the dead connection unchecked, so that the search itself meets it.
    monkeypatch.setattr(db, "_server_wrote", lambda dbapi_connection: False)
    with db.read_connection(store.engine) as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with store.engine.connect() as killer:  # another connection; conn goes back last, comes out first
            killer.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            killer.commit()
    hits = store.search(name, query, 2)
    assert hits[0].external_id == "cat"
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid


def test_a_search_run_on_the_driver_reports_a_lock_timeout_as_the_engine_does(store, filled, encoder) -> None:  # type: ignore[no-untyped-def]
    """A search runs on psycopg itself: its errors go through the engine's translation. This test
    once required SQLAlchemy's raw OperationalError here ("as before"); a lock timeout is now
    semsim's one-line QueryCanceled, as for statements the engine runs (tests/test_timeouts.py)."""
    from semsim_pg.errors import QueryCanceled

    name = filled
    query = QueryVector(encoder.encode_query("a kitten"), encoder.name)
    store.search(name, query, 2)
    with store.engine.connect() as conn:  # the session the next search gets: waits for a lock 50 ms at most
        conn.execute(sa.text("SET lock_timeout = '50ms'"))
        conn.commit()
        with store.engine.connect() as blocker:  # holds the vectors' table meanwhile
            blocker.execute(sa.text("LOCK TABLE semsim.embeddings IN ACCESS EXCLUSIVE MODE"))
            conn.close()
            try:
                with pytest.raises(QueryCanceled, match=r"lock timeout\): .*raise lock_timeout"):
                    store.search(name, query, 2)
            finally:
                blocker.rollback()
    with store.engine.connect() as conn:
        conn.execute(sa.text("RESET lock_timeout"))
        conn.commit()
    assert store.search(name, query, 2)[0].external_id == "cat"


def test_the_embedded_server_keeps_an_eighth_of_memory_for_its_buffers(store) -> None:  # type: ignore[no-untyped-def]
    """A 100,000-row collection's graph (about 200 MB) fits: with PostgreSQL's 128MB a search read
    nearly half its pages from outside the buffers."""
    from semsim_pg.server import shared_buffers

    wanted = shared_buffers()
    assert 128 <= int(wanted.removesuffix("MB")) <= 1024
    if not store.settings.embedded:
        pytest.skip("the suite runs on a PostgreSQL of its own (SEMSIM_TEST_DATABASE_URL)")
    with store.engine.connect() as conn:
        held = conn.execute(
            sa.text("SELECT setting::bigint * 8192 / 1048576 FROM pg_settings WHERE name = 'shared_buffers'")
        )
        assert f"{held.scalar()}MB" == wanted


def test_a_hit_made_from_its_row_values_is_the_hit_the_constructor_makes() -> None:
    """SearchHit.from_values lists the fields by hand for speed: a field added to SearchHit and
    forgotten there would leave hits without it."""
    import dataclasses

    from semsim_pg.store import SearchHit

    values = ("d1", "a text", {"k": 1}, 0.9, 0.1, 0.8, 1, 2, 3.5, 1, 2, 6)
    names = [f.name for f in dataclasses.fields(SearchHit)]
    assert len(names) == len(values), f"SearchHit has fields {names}: list them in from_values too"
    made = SearchHit.from_values(*values)
    assert made == SearchHit(*values)
    assert vars(made) == dict(zip(names, values, strict=True))
    assert made.passage_text == "text"
