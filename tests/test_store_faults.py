"""Faults from issue 14 (data items): racing writers, zero vectors, a lost index, input PostgreSQL refuses."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg import DocumentStore
from semsim_pg.encoder import text_hash


class PausingEncoder:
    """The session's encoder, but ``encode`` waits for ``resume`` once it has told ``entered``:
    a writer held between reading the stored hashes and writing its batch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.dimension, self.batch_size = inner.name, inner.dimension, inner.batch_size
        self.backend_name = inner.backend_name
        self.entered, self.resume = threading.Event(), threading.Event()

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        self.entered.set()
        assert self.resume.wait(60), "the test never resumed the writer"
        return self.inner.encode(texts, **kwargs)

    def encode_query(self, text: str) -> Any:
        return self.inner.encode_query(text)


def vectors_match_texts(store, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Ids whose stored vector was not computed from the document's current text."""
    coll = store.get_collection(name)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.external_id, d.text, e.text_hash, e.embedding::text FROM semsim.documents d"
                " LEFT JOIN semsim.embeddings e ON e.document_id = d.id AND e.model_name = :m"
                " WHERE d.collection_id = :c ORDER BY d.external_id"
            ),
            {"m": coll.model_name, "c": coll.id},
        ).all()
    wrong = []
    for external_id, text, stored_hash, embedding in rows:
        expected = store.encoder_for(coll).encode([text], show_progress_bar=False)[0]
        vector = np.array(embedding.strip("[]").split(","), dtype=np.float32) if embedding else None
        if stored_hash != text_hash(text) or vector is None or float(vector @ expected) < 0.999:
            wrong.append(external_id)
    return wrong


@pytest.mark.slow
def test_two_writers_of_the_same_ids_leave_every_vector_current(store, collection_name, encoder) -> None:  # type: ignore[no-untyped-def]
    """Writer A reads the stored hashes ("x" unchanged), then encodes "y"; meanwhile writer B
    commits new text for "x". A then writes its text of "x" back: its vector must follow."""
    store.create_collection(collection_name)
    store.upsert(collection_name, [("x", "The dog chases the cat"), ("y", "Stock markets fell")])
    pausing = PausingEncoder(encoder)
    writer_a = DocumentStore(encoder=pausing, migrate=True)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def run_a() -> None:
        try:
            writer_a.upsert(collection_name, [("x", "The dog chases the cat"), ("y", "A rocket reached orbit")])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run_a)
    thread.start()
    try:
        assert pausing.entered.wait(60)
        store.upsert(collection_name, [("x", "Boil the pasta for ten minutes")])  # writer B, committed
    finally:
        pausing.resume.set()
        thread.join(60)
    assert not errors, errors
    assert store.get(collection_name, "x").text == "The dog chases the cat"  # A wrote last
    assert vectors_match_texts(store, collection_name) == []
    assert store.stale_count(collection_name) == 0
    assert store.search(collection_name, "a puppy runs after a kitten", k=1)[0].external_id == "x"


def test_zero_vectors_are_refused_where_cosine_cannot_measure_them(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg import InvalidInput, InvalidQuery

    coll = store.create_collection(collection_name)
    vectors = np.eye(3, coll.dimension, dtype=np.float32)
    vectors[1] = 0.0
    with pytest.raises(InvalidInput, match=r"zero vector \(row 1\)"):
        store.upsert(collection_name, [("a", "one"), ("b", "two"), ("c", "three")], vectors=vectors)
    assert store.count(collection_name) == 0  # nothing half-written
    store.upsert(collection_name, [("a", "one")], vectors=vectors[:1])
    with pytest.raises(InvalidQuery, match="zero vector"):
        store.search(collection_name, np.zeros(coll.dimension, dtype=np.float32))
    # l2 measures a zero vector like any other point
    other = collection_name + "_l2"
    try:
        store.create_collection(other, metric="l2")
        store.upsert(other, [("a", "one"), ("b", "two")], vectors=vectors[:2])
        assert store.search(other, np.zeros(coll.dimension, dtype=np.float32), k=1)[0].external_id == "b"
    finally:
        store.drop_collection(other)


KILLED_LOAD = """
import sys, time
import numpy as np
from semsim_pg import DocumentStore
from semsim_pg.store import ingest

write_batch = ingest.write_batch

def then_hang(*args, **kwargs):  # the first batch commits, then the process is killed
    result = write_batch(*args, **kwargs)
    print("loading", flush=True)
    time.sleep(600)
    return result

ingest.write_batch = then_hang
store = DocumentStore(migrate=True)
name, dim = sys.argv[1], int(sys.argv[2])
vectors = np.random.default_rng(0).normal(size=(300, dim)).astype(np.float32)
store.upsert(name, [(str(i), f"document {i}") for i in range(300)], vectors=vectors, defer_index=True, batch_size=100)
"""


def index_exists(store, coll) -> bool:  # type: ignore[no-untyped-def]
    from semsim_pg.queries import index_name

    with store.engine.connect() as conn:
        found = conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": "semsim." + index_name(coll.id, coll.model_name)})
        return found.scalar() is not None


@pytest.mark.slow
def test_an_index_a_killed_load_dropped_comes_back(store, collection_name, capsys) -> None:  # type: ignore[no-untyped-def]
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from semsim_pg.cli.main import main

    coll = store.create_collection(collection_name)
    loader = subprocess.Popen(
        [sys.executable, "-c", KILLED_LOAD, collection_name, str(coll.dimension)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert loader.stdout is not None and loader.stdout.readline().strip() == "loading"
        assert not index_exists(store, coll)
        assert store.index_state(collection_name) == "loading"  # a running load: not to be rebuilt
    finally:
        loader.send_signal(signal.SIGKILL)
        loader.wait(30)
    deadline = time.monotonic() + 30
    while store.index_state(collection_name) == "loading" and time.monotonic() < deadline:
        time.sleep(0.2)  # the server notices the dead session
    assert store.index_state(collection_name) == "missing"
    assert main(["collections", "--json"]) == 0
    listed = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed[collection_name]["index"] == "missing"
    # The next ingest restores it before writing.
    store.upsert(collection_name, [("extra", "one more")], vectors=np.ones((1, coll.dimension), np.float32))
    assert index_exists(store, coll)
    assert store.index_state(collection_name) == "valid"
    assert store.count(collection_name) == 101


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    vectors = centres[rng.integers(0, 50, size=n)] + 0.6 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.slow
def test_index_check_measures_recall_and_says_what_would_reach_the_target(store, collection_name, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from semsim_pg import queries
    from semsim_pg.cli.main import main
    from semsim_pg.sql import to_array, vector_literal

    coll = store.create_collection(collection_name, m=4, ef_construction=8)  # a sparse graph: it misses
    empty = store.check_index(collection_name, sample=40)  # nothing stored yet: nothing to miss
    assert empty.state == "valid" and empty.sample == 0 and empty.recall is None and empty.ok
    vectors = clustered(3000, coll.dimension)
    store.upsert(collection_name, [(str(i), f"doc {i}") for i in range(3000)], vectors=vectors, batch_size=1000)
    weak = store.check_index(collection_name, sample=40, ef_search=10)
    assert weak.state == "valid" and weak.sample == 40
    # the same figure computed independently, from the query layer's statements
    with store.engine.connect() as conn:
        sampled = conn.execute(queries.sample_embeddings(coll.id, coll.model_name, 40)).all()
        conn.rollback()
        shares = []
        for _, vector, doc_id in sampled:
            found = []
            for exact, settings in (
                (False, queries.search_settings(10, "relaxed_order", force_index=True)),
                (True, None),
            ):
                with conn.begin():
                    if settings is not None:
                        conn.execute(settings)
                    statement = queries.search_statement(
                        coll, vector_literal(to_array(vector)), 10, exact=exact, exclude_id=int(doc_id)
                    )
                    found.append({r[0] for r in conn.execute(statement)})
            shares.append(len(found[0] & found[1]) / len(found[1]))
    assert weak.recall == pytest.approx(np.mean(shares), abs=1e-9)
    assert weak.recall < 0.95 and not weak.ok
    assert weak.suggestion is not None
    if weak.ef_search_needed is not None:
        assert f"ef_search {weak.ef_search_needed}" in weak.suggestion
        assert store.check_index(collection_name, sample=40, ef_search=weak.ef_search_needed).ok
    else:
        assert "--m" in weak.suggestion
    # the command line: exit 3 below target, JSON for scripts; a rebuild with a denser graph passes
    assert main(["index", "check", "-c", collection_name, "--sample", "40", "--ef-search", "10", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["recall"] == pytest.approx(weak.recall)
    assert main(["index", "rebuild", "-c", collection_name, "--m", "16", "--ef-construction", "128"]) == 0
    assert "m 16, ef_construction 128" in capsys.readouterr().out
    assert main(["index", "check", "-c", collection_name, "--sample", "40", "--ef-search", "100"]) == 0
    assert "recall@10" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s, c: s.search(c, "dogs", filter={"year": float("nan")}), "filter on 'year'"),
        (lambda s, c: s.search(c, "dogs", filter={"year": [2020, float("inf")]}), "filter on 'year'"),
        (lambda s, c: s.search(c, "caf\udce9"), "query"),
        (lambda s, c: s.search_many(c, ["fine", "caf\udce9"]), "query #2"),
        (lambda s, c: s.search("caf\udce9", "dogs"), "collection name"),
        (lambda s, c: s.create_collection("a\x00b"), "collection name"),
        (lambda s, c: s.upsert(c, [("x" * 3000, "a text")]), "id of document #0"),
        (lambda s, c: s.upsert(c, [("bad\udcff", "a text")]), "id of document #0"),
        (lambda s, c: s.upsert(c, [("ok", "text \udcff")]), "text of document 'ok'"),
        (lambda s, c: s.get(c, "nul\x00id"), "document id"),
        (lambda s, c: s.similar(c, "x" * 3000), "document id"),
    ],
)
def test_input_postgresql_cannot_take_is_refused_naming_the_field(store, collection_name, call, field: str) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg import InvalidInput

    store.create_collection(collection_name)
    store.upsert(collection_name, [("d", "The dog chases the cat", {"year": 2020})])
    with pytest.raises(InvalidInput) as info:
        call(store, collection_name)
    message = str(info.value)
    assert field in message and "\n" not in message
    assert store.count(collection_name) == 1  # nothing half-written


def test_cli_filter_nan_is_a_one_line_error(store, collection_name, capsys) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli.main import main

    store.create_collection(collection_name)
    store.upsert(collection_name, [("d", "The dog chases the cat", {"year": 2020})])
    for value in ("NaN", "Infinity", "-Infinity"):
        assert main(["search", "dogs", "-c", collection_name, "--filter", f"year={value}"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "filter on 'year'" in err and "Traceback" not in err


def test_warm_index_reads_the_whole_graph_and_says_when_there_is_none(store, collection_name, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from semsim_pg import queries
    from semsim_pg.cli.main import main
    from semsim_pg.errors import InvalidInput

    coll = store.create_collection(collection_name)
    store.upsert(collection_name, [(str(i), f"doc {i}") for i in range(1500)], vectors=clustered(1500, coll.dimension))
    warmed = store.warm_index(collection_name)
    assert warmed.index == queries.index_name(coll.id, coll.model_name) and warmed.vectors == 1500
    assert warmed.index_bytes > 1500 * coll.dimension * 4 and warmed.shared_buffers_bytes > 0
    if warmed.method == "index scan":  # a server without pg_prewarm (the embedded one)
        assert warmed.visited is not None and warmed.visited >= 0.99 * 1500
        # ... read through the HNSW index itself, not a table scan that counts the same rows
        with store.engine.connect() as conn, conn.begin():
            conn.execute(queries.traversal_settings())
            plan = "\n".join(
                conn.execute(queries.Explain(queries.index_traversal(coll, 1500), analyze=False)).scalars()
            )
        assert f"Index Scan using {warmed.index}" in plan, plan
    assert main(["-q", "warmup", "--collections", collection_name, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["indexes"]
    assert listed["collection"] == collection_name and listed["vectors"] == 1500 and listed["fits"] is True
    # no index (a dead bulk load's leftover): a one-line error that says how to build it
    from semsim_pg.store.indexes import drop_index

    drop_index(store.engine, coll)
    with pytest.raises(InvalidInput, match=f"semsim index rebuild {collection_name}"):
        store.warm_index(collection_name)


def test_forked_processes_search_on_their_own_connections(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    """gunicorn --preload, Celery prefork, multiprocessing's fork: a child used the parent's pooled
    sockets, so concurrent children read each other's results (or errors, or hung)."""
    import os
    import signal
    import time

    from tests.test_store import CORPUS

    corpus = collection_name
    store.upsert(store.create_collection(corpus), CORPUS)

    queries = ["How do I reset my password?", "When does the shop open?", "Is shipping free?", "cats"]
    expected = {q: [(h.external_id, round(h.similarity, 5)) for h in store.search(corpus, q, k=3)] for q in queries}
    children = []
    gate_out, gate_in = os.pipe()  # the children start together: their searches overlap
    for child in range(3):
        pid = os.fork()
        if pid == 0:  # the child: search, compare, report by exit status only
            status = 1
            try:
                os.read(gate_out, 1)
                ok = all(
                    [(h.external_id, round(h.similarity, 5)) for h in store.search(corpus, q, k=3)] == expected[q]
                    for _ in range(20)
                    for q in queries[child:] + queries[:child]
                )
                status = 0 if ok else 2
            finally:
                os._exit(status)
        children.append(pid)
    os.write(gate_in, b"go!")
    deadline = time.monotonic() + 60
    statuses = {}
    while len(statuses) < len(children) and time.monotonic() < deadline:
        for pid in children:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for pid in set(children) - set(statuses):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert statuses == dict.fromkeys(children, 0)  # every child finished, with its own results
    assert [(h.external_id, round(h.similarity, 5)) for h in store.search(corpus, queries[0], k=3)] == expected[
        queries[0]
    ]
