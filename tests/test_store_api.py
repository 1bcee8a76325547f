"""The store's API as a service sees it: errors of a lost or busy database, the pool's settings,
close(), argument checks, and the exception tree's public names."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from semsim_pg import db
from semsim_pg.errors import ConnectionLost, DatabaseUnavailable, PoolExhausted
from semsim_pg.store import DocumentStore
from tests.test_settings_and_server import data_dir  # noqa: F401 - the fixture: a server of its own


def _terminate(engine: sa.Engine, conn: sa.Connection) -> None:
    """End ``conn``'s server session from another connection, as a restarted server would, and
    wait until it is gone (pg_terminate_backend's timeout)."""
    pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    with engine.connect() as killer:
        assert killer.execute(sa.text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid}).scalar()


def test_a_connection_lost_under_upsert_is_connection_lost(store, collection_name, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """upsert's first statement (the index check of ensure_index) met a session the server had
    ended: sqlalchemy's OperationalError came out of upsert, raw."""
    from semsim_pg.store import indexes

    store.create_collection(collection_name)
    real = indexes.index_state

    def on_an_ended_session(conn, coll, model=None):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(indexes, "index_state", real)
        _terminate(store.engine, conn)
        return real(conn, coll, model)

    monkeypatch.setattr(indexes, "index_state", on_an_ended_session)
    with pytest.raises(ConnectionLost, match=r"was lost \(.*\): the server stopped, restarted") as error:
        store.upsert(collection_name, [("a", "a text about cats")])
    assert isinstance(error.value, DatabaseUnavailable) and len(str(error.value).splitlines()) == 1
    assert store.count(collection_name) == 0
    # the pool dropped the dead connection: the same call works now
    assert store.upsert(collection_name, [("a", "a text about cats")]).inserted == 1


def test_a_copy_that_loses_its_connection_is_connection_lost(store, collection_name, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The COPY of a batch runs on psycopg itself, past the engine: its error came out as
    psycopg's OperationalError, which the ingest's "what was committed" message did not know."""
    from semsim_pg.store import ingest

    store.create_collection(collection_name)
    staged = ingest._staged_rows
    calls = []

    def then_end_the_session(doc, hash, passages):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:  # the second batch, mid-COPY
            with store.engine.connect() as killer:
                killer.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                        "WHERE query LIKE 'COPY %' AND pid <> pg_backend_pid()"
                    )
                )
        return staged(doc, hash, passages)

    monkeypatch.setattr(ingest, "_staged_rows", then_end_the_session)
    docs = [(f"d{i}", f"sentence number {i}") for i in range(4)]
    with pytest.raises(DatabaseUnavailable, match=r"lost during the ingest .*first 2 documents were committed"):
        store.upsert(collection_name, docs, batch_size=2)
    assert store.count(collection_name) == 2


@pytest.mark.slow
def test_a_server_stopped_under_busy_threads_gives_semsim_errors(data_dir: Path, encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """8 threads search and upsert on one store; the server stops under them. Every error they
    see is a DatabaseUnavailable, and so is every entry point called on the dead pool
    afterwards (its connections handed out unchecked, so that each statement meets one)."""
    from semsim_pg.server import embedded_server_url, stop_embedded_server

    store = DocumentStore(embedded_server_url(data_dir), encoder=encoder, migrate=True)
    coll = store.create_collection("c")
    store.upsert("c", [(f"d{i}", f"sentence number {i}") for i in range(20)])
    errors: list[BaseException] = []
    running = threading.Event()
    running.set()

    def work(n: int) -> None:
        i = 0
        while running.is_set():
            i += 1
            try:
                if n % 2:
                    store.upsert("c", [(f"t{n}-{i % 5}", f"text {n} {i}")])
                else:
                    store.search("c", f"sentence {i}", 3)
            except Exception as exc:
                errors.append(exc)
                time.sleep(0.05)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    try:
        assert stop_embedded_server(data_dir)
        time.sleep(1.0)
    finally:
        running.clear()
        for thread in threads:
            thread.join()
    assert errors
    others = {f"{type(e).__name__}: {e}" for e in errors if not isinstance(e, DatabaseUnavailable)}
    assert not others, others

    # Every entry point, on pooled connections that are dead but handed out as if alive.
    monkeypatch.setattr(db, "_server_wrote", lambda dbapi_connection: False)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    vector = store.encoder_for(coll).encode_query("cats")
    calls: list[Callable[[], Any]] = [
        lambda: store.upsert(coll, [("x", "a new text")]),
        lambda: store.search(coll, vector, 3),
        lambda: store.similar(coll, "d1", 3),
        lambda: store.get(coll, "d1"),
        lambda: store.count(coll),
        lambda: store.delete(coll, ["d1"]),
        lambda: store.list_collections(),
        lambda: store.index_state(coll),
        lambda: store.check_index(coll, sample=5),
        lambda: store.build_index(coll, rebuild=True),
        lambda: store.explain(coll, vector, 3),
        lambda: store.stale_count(coll),
        lambda: store.get_collection("c"),
    ]
    wrong = []
    for number, call in enumerate(calls):
        try:
            call()
            wrong.append(f"call #{number}: no error")
        except DatabaseUnavailable:
            pass
        except Exception as exc:
            wrong.append(f"call #{number}: {type(exc).__name__}: {exc}")
    assert not wrong, wrong
    store.close()


def test_pool_settings_come_from_the_environment_and_are_checked() -> None:
    from semsim_pg.errors import ConfigurationError
    from semsim_pg.settings import Settings

    settings = Settings.from_env(
        {"SEMSIM_POOL_SIZE": "2", "SEMSIM_POOL_MAX_OVERFLOW": "0", "SEMSIM_POOL_TIMEOUT": "1.5"}
    )
    assert (settings.pool_size, settings.pool_max_overflow, settings.pool_timeout) == (2, 0, 1.5)
    assert (Settings().pool_size, Settings().pool_max_overflow, Settings().pool_timeout) == (5, 10, 30.0)
    for env, message in [
        ({"SEMSIM_POOL_SIZE": "0"}, "pool_size must be >= 1, got 0"),
        ({"SEMSIM_POOL_SIZE": "many"}, "SEMSIM_POOL_SIZE must be a whole number, got 'many'"),
        ({"SEMSIM_POOL_MAX_OVERFLOW": "-1"}, "pool_max_overflow must be >= 0, got -1"),
        ({"SEMSIM_POOL_TIMEOUT": "0"}, "pool_timeout must be a number of seconds above 0"),
        ({"SEMSIM_POOL_TIMEOUT": "nan"}, "pool_timeout must be a number of seconds above 0"),
        # accepted before, then a full pool raised OverflowError (timestamp out of range)
        ({"SEMSIM_POOL_TIMEOUT": "inf"}, r"pool_timeout must be at most \d+ seconds \(a finite number\), got inf"),
        ({"SEMSIM_POOL_TIMEOUT": "1e10"}, r"pool_timeout must be at most \d+ seconds"),
    ]:
        with pytest.raises(ConfigurationError, match=message) as error:
            Settings.from_env(env)
        assert len(str(error.value).splitlines()) == 1


def test_an_exhausted_pool_says_what_to_do(store, encoder, collection_name) -> None:  # type: ignore[no-untyped-def]
    """Every pooled connection held: search waited pool_timeout, then raised sqlalchemy's raw
    TimeoutError ("QueuePool limit of size 5 overflow 10 reached")."""
    store.create_collection(collection_name)
    store.upsert(collection_name, [("a", "a text about cats")])
    small = DocumentStore(
        settings=store.settings.replace(pool_size=2, pool_max_overflow=1, pool_timeout=0.2), encoder=encoder
    )
    engine = small.engine
    assert engine is not store.engine  # other pool settings, another pool
    assert (engine.pool.size(), engine.pool.timeout()) == (2, 0.2)  # type: ignore[attr-defined]
    held = [engine.connect() for _ in range(3)]
    try:
        with pytest.raises(PoolExhausted) as error:
            small.search(collection_name, "cats", 1)
    finally:
        for conn in held:
            conn.close()
    message = str(error.value)
    assert len(message.splitlines()) == 1 and isinstance(error.value, DatabaseUnavailable)
    assert "all 3 of semsim's pool (pool_size 2 + max_overflow 1) were in use" in message
    assert "within 0.2 s" in message and "SEMSIM_POOL_SIZE" in message and "fewer threads" in message
    assert small.search(collection_name, "cats", 1)[0].external_id == "a"
    small.close()


def test_close_releases_the_pool_without_breaking_other_stores(store, encoder, collection_name) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, [("a", "a text about cats")])
    other = DocumentStore(encoder=encoder)
    assert other.engine is store.engine  # one engine per database and pool settings
    in_use = other.engine.connect()  # another store's work in flight while the first closes
    in_use.execute(sa.text("SELECT 1"))

    def sessions() -> int:
        count = in_use.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'semsim'"))
        found = int(count.scalar_one())
        in_use.commit()  # the statistics views are read once per transaction
        return found

    with DocumentStore(encoder=encoder) as closing:
        assert closing.search(collection_name, "cats", 1)[0].external_id == "a"
        idle = store.engine.pool.checkedin()  # type: ignore[attr-defined]
        before = sessions()
    assert idle > 0 and store.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30  # the server notices closed sockets soon, not at once
    while sessions() != before - idle and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions() == before - idle  # the idle connections are closed
    assert in_use.execute(sa.text("SELECT 2")).scalar() == 2  # ... not the one in use
    in_use.close()
    # every store, the closed one too, opens connections again on its next call
    assert other.search(collection_name, "cats", 1)[0].external_id == "a"
    assert closing.count(collection_name) == 1
    closing.close()
    closing.close()  # twice is fine
    never_used = DocumentStore()
    never_used.close()
    assert never_used._engine is None  # nothing was opened (nor an embedded server started) to close


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"min_similarity": "abc"}, "min_similarity must be a number (e.g. 0.5), got 'abc'"),
        ({"min_similarity": "0.9"}, "min_similarity must be a number (e.g. 0.5), got '0.9'"),
        ({"min_similarity": [0.1]}, "min_similarity must be a number (e.g. 0.5), got [0.1]"),
        ({"min_similarity": True}, "min_similarity must be a number (e.g. 0.5), got True"),
        ({"min_similarity": float("nan")}, "min_similarity must be a finite number (e.g. 0.5), got nan"),
        ({"ef_search": "x"}, "ef_search must be a whole number between 1 and 1000, got 'x'"),
        ({"ef_search": 2.5}, "ef_search must be a whole number between 1 and 1000, got 2.5"),
        ({"ef_search": 0}, "ef_search must be a whole number between 1 and 1000, got 0"),
        ({"ef_search": 1001}, "ef_search must be a whole number between 1 and 1000, got 1001"),
    ],
)
def test_bad_search_arguments_are_invalid_query(store, collection_name, arguments, message) -> None:  # type: ignore[no-untyped-def]
    """min_similarity="abc" raised float()'s ValueError, [0.1] its TypeError, "0.9" was taken;
    ef_search="x" raised int()'s ValueError and 2.5 was cut to 2 (while k=2.5 was refused)."""
    import re

    from semsim_pg.errors import InvalidQuery

    store.create_collection(collection_name)
    store.upsert(collection_name, [("a", "a text about cats")])
    for call in (
        lambda: store.search(collection_name, "cats", 1, **arguments),
        lambda: store.similar(collection_name, "a", 1, **arguments),
        lambda: store.search_many(collection_name, ["cats"], 1, **arguments),
    ):
        with pytest.raises(InvalidQuery, match=re.escape(message)) as error:
            call()
        assert len(str(error.value).splitlines()) == 1
    # the good values of the same kinds still work (a NumPy number too)
    import numpy as np

    assert store.search(collection_name, "cats", 1, min_similarity=np.float32(0.1), ef_search=np.int64(50))


@pytest.mark.parametrize("query", [None, 123, 0.5])
def test_a_query_that_is_neither_text_nor_vector_says_so(store, collection_name, query) -> None:  # type: ignore[no-untyped-def]
    """search(None) said "The query vector must be one-dimensional, got shape ()"."""
    from semsim_pg.errors import InvalidQuery

    store.create_collection(collection_name)
    with pytest.raises(InvalidQuery, match=r"The query must be a text or a vector \(a QueryVector, or a list") as error:
        store.search(collection_name, query, 1)
    assert f"got {query!r}" in str(error.value)


_USER_MODULE = '''
"""A user's service module, checked with mypy --strict."""

from __future__ import annotations

from typing import Any, assert_type

from semsim_pg import DocumentStore, RerankedHit, SearchHit, search_and_rerank


def best(store: DocumentStore) -> tuple[str, float]:
    top = store.search("articles", "rate rises", k=3)[0]
    assert_type(top.score, float)
    return top.external_id, top.score + 1.0


def reranked(store: DocumentStore) -> list[str]:
    with DocumentStore() as other:
        other.count("articles")
    first = search_and_rerank(store, "articles", "rate rises", top_k=3)[0]
    assert_type(first, RerankedHit[SearchHit])
    assert_type(first.external_id, str)
    assert_type(first.text, str)
    assert_type(first.metadata, dict[str, Any])
    assert_type(first.rerank_score, float)
    return [first.external_id]
'''


@pytest.mark.slow
def test_a_users_strict_mypy_sees_the_types_the_readme_promises(tmp_path: Path) -> None:
    """SearchHit.score was float | None though a search always sets it; a RerankedHit's
    external_id, text and metadata were Any (through __getattr__); DocumentStore had no
    __enter__/__exit__."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    module = tmp_path / "service.py"
    module.write_text(_USER_MODULE, encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(module)],
        cwd=root,
        env={**os.environ, "MYPYPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_hit_made_without_a_score_is_ordered_by_its_similarity() -> None:
    from semsim_pg import SearchHit

    assert SearchHit("a", "text", {}, 0.75, 0.25).score == 0.75
    assert SearchHit("a", "text", {}, 0.75, 0.25, 3.5).score == 3.5


def test_every_error_is_importable_from_semsim_pg_and_listed_in_the_readme() -> None:
    """NotAnFAQCollection was in semsim_pg.errors only; it and DocumentNotFound were missing from
    the README's list of errors."""
    import semsim_pg
    from semsim_pg import errors

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API") : readme.index("## SQL, for psql")]
    listed = section[section.index("- Errors all derive from") :]
    for name in errors.__all__:
        assert name in semsim_pg.__all__ and getattr(semsim_pg, name) is getattr(errors, name), name
        assert f"`{name}`" in listed, f"the README's list of errors lacks {name}"
        assert issubclass(getattr(errors, name), errors.SemsimError)
