"""Lexical (BM25 over PostgreSQL full text search) and hybrid (RRF) search, on the real server and model."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from semsim_pg.errors import CollectionExists, InvalidInput, InvalidQuery
from tests.catalog import assert_migrations_are_this_checkouts

# Many texts about the same thing, told apart only by a product code: the model sees codes as
# noise, words find them exactly.
FILTERS = [
    ("f1", "Replacement water filter cartridge XR-7734B for the kitchen purifier.", {"shop": "eu"}),
    ("f2", "Replacement water filter cartridge KT-1029A for the kitchen purifier.", {"shop": "eu"}),
    ("f3", "Replacement water filter cartridge PL-5521C for the kitchen purifier.", {"shop": "us"}),
    ("f4", "Replacement water filter cartridge MN-8830D for the kitchen purifier.", {"shop": "us"}),
    ("f5", "Water purifier filter cartridge, replacement part for kitchen taps.", {"shop": "eu"}),
    ("f6", "How often should the kitchen water filter be replaced?", {"shop": "us"}),
]
# A long text whose rare term sits past the 256 tokens the model reads: only words can find it.
MANUAL = (
    "manual",
    " ".join(["The orchestra rehearsed the second movement of the symphony again and again."] * 30)
    + " Spare part number QV-4471Z.",
    {"shop": "eu"},
)
GENERAL = [
    ("g1", "The cat sleeps on the warm windowsill all afternoon.", {"shop": "eu"}),
    ("g2", "Heavy rain is expected in the mountains this weekend.", {"shop": "us"}),
    ("g3", "She runs every morning before work along the river.", {"shop": "eu"}),
    ("g4", "The orchestra rehearsed the symphony for the concert.", {"shop": "us"}),
    ("g5", "A recipe for bread with sourdough starter and rye flour.", {"shop": "eu"}),
    ("g6", "Runners gathered at the start line of the city marathon.", {"shop": "us"}),
]


@pytest.fixture()
def products(store, collection_name):  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, [*FILTERS, *GENERAL, MANUAL])
    return collection_name


def ids(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.external_id for h in hits]


def test_migrations_are_this_checkouts() -> None:
    assert_migrations_are_this_checkouts()


def test_a_rare_term_is_found_by_words_that_meaning_misses(store, products) -> None:  # type: ignore[no-untyped-def]
    query = "spare part QV-4471Z"
    lexical = store.search(products, query, 3, mode="lexical")
    assert ids(lexical)[0] == "manual"
    assert lexical[0].lexical_rank == 1 and lexical[0].lexical_score > 0
    assert lexical[0].dense_rank is None and -1 <= lexical[0].similarity <= 1  # the dense score comes along
    assert "manual" not in ids(store.search(products, query, 3))
    hybrid = store.search(products, query, 3, mode="hybrid")
    assert "manual" in ids(hybrid)
    hit = hybrid[ids(hybrid).index("manual")]
    assert hit.lexical_rank == 1 and hit.dense_rank is not None and hit.dense_rank > 3


def test_a_product_code_ranks_its_document_first(store, products) -> None:  # type: ignore[no-untyped-def]
    lexical = store.search(products, "XR-7734B", 3, mode="lexical")
    assert ids(lexical) == ["f1"]  # the only document holding the code
    assert ids(store.search(products, "how often to replace filter XR-7734B", 1))[0] == "f6"
    assert ids(store.search(products, "how often to replace filter XR-7734B", 1, mode="hybrid"))[0] == "f1"


def test_hybrid_order_is_reciprocal_rank_fusion_of_both_sides(store, products) -> None:  # type: ignore[no-untyped-def]
    query = "kitchen water filter replacement KT-1029A"
    n, rrf_k, weights = 8, 60, (1.0, 0.7)
    # Each side on its own, through the same store (the same ef_search on the dense side).
    dense = ids(store.search(products, query, n, ef_search=100))
    lexical = ids(store.search(products, query, n, mode="lexical"))
    expected: dict[str, float] = {}
    for weight, ranking in zip(weights, (dense, lexical), strict=True):
        for rank, doc in enumerate(ranking, 1):
            expected[doc] = expected.get(doc, 0.0) + weight / (rrf_k + rank)
    hits = store.search(products, query, 5, mode="hybrid", candidates=n, rrf_k=rrf_k, weights=weights, ef_search=100)
    assert len(hits) == 5
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.external_id])
        assert hit.dense_rank == (dense.index(hit.external_id) + 1 if hit.external_id in dense else None)
        assert hit.lexical_rank == (lexical.index(hit.external_id) + 1 if hit.external_id in lexical else None)
    best = sorted(expected.values(), reverse=True)[:5]
    assert [h.score for h in hits] == pytest.approx(best)
    assert ids(hits)[0] == "f2"


def test_sql_function_matches_the_store(store, products, engine) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.sql import vector_literal

    query = "replacement cartridge PL-5521C"
    hits = store.search(products, query, 6, mode="hybrid", ef_search=100)
    vector = vector_literal(store.query_vector(products, query))
    with engine.connect() as conn:
        conn.execute(sa.text("SET hnsw.ef_search = 100"))
        rows = conn.execute(
            sa.text("SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), 6)"),
            {"c": products, "t": query, "v": vector},
        ).all()
    assert [r.external_id for r in rows] == ids(hits)
    for row, hit in zip(rows, hits, strict=True):
        assert row.score == pytest.approx(hit.score)
        assert row.similarity == pytest.approx(hit.similarity, abs=1e-5)
        assert row.lexical_score == pytest.approx(hit.lexical_score)
        assert (row.dense_rank, row.lexical_rank) == (hit.dense_rank, hit.lexical_rank)


def test_filter_applies_to_both_sides(store, products) -> None:  # type: ignore[no-untyped-def]
    query = "XR-7734B replacement water filter"
    unfiltered = store.search(products, query, 12, mode="hybrid")
    assert ids(unfiltered)[0] == "f1"
    hits = store.search(products, query, 12, mode="hybrid", filter={"shop": "us"})
    assert hits and all(h.metadata["shop"] == "us" for h in hits)
    # ranks are taken among the filtered documents only, on both sides
    assert sorted(h.dense_rank for h in hits if h.dense_rank) == list(range(1, len(hits) + 1))
    lexical_ranks = sorted(h.lexical_rank for h in hits if h.lexical_rank)
    assert lexical_ranks == list(range(1, len(lexical_ranks) + 1))
    lexical = store.search(products, query, 12, mode="lexical", filter={"shop": "us"})
    assert lexical and all(h.metadata["shop"] == "us" for h in lexical)


def test_min_similarity_keeps_its_dense_meaning(store, products) -> None:  # type: ignore[no-untyped-def]
    query = "XR-7734B"
    every = store.search(products, query, 12, mode="hybrid")
    threshold = sorted(h.similarity for h in every)[len(every) // 2]
    kept = store.search(products, query, 12, mode="hybrid", min_similarity=threshold)
    assert kept and all(h.similarity >= threshold for h in kept)
    assert ids(kept) == [h.external_id for h in every if h.similarity >= threshold]


def test_raw_sql_update_changes_lexical_results(store, products, engine) -> None:  # type: ignore[no-untyped-def]
    assert store.search(products, "sourdough", 3, mode="lexical")[0].external_id == "g5"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE semsim.documents SET text = 'A recipe for flatbread with yeast.'"
                " WHERE external_id = 'g5' AND collection_id = (SELECT id FROM semsim.collections WHERE name = :c)"
            ),
            {"c": products},
        )
    assert store.search(products, "flatbread", 3, mode="lexical")[0].external_id == "g5"
    assert store.search(products, "sourdough", 3, mode="lexical") == []  # no document holds it any more


def test_text_search_configuration_per_collection(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    coll = store.create_collection(collection_name, text_search_config="simple")
    assert coll.text_search_config == "simple"
    store.upsert(collection_name, GENERAL)
    # 'simple' neither stems nor drops stop words: "running" is not "runs"
    assert "g3" not in ids(store.search(collection_name, "running", 5, mode="lexical"))
    assert store.set_text_search_config(collection_name, "english").text_search_config == "english"
    assert "g3" in ids(store.search(collection_name, "running", 5, mode="lexical"))
    with pytest.raises(CollectionExists, match="set_text_search_config"):
        store.create_collection(collection_name, text_search_config="simple")
    with pytest.raises(InvalidInput, match="Unknown text search configuration 'klingon'") as error:
        store.set_text_search_config(collection_name, "klingon")
    assert "\n" not in str(error.value)
    with pytest.raises(InvalidInput, match="klingon"):
        store.create_collection(f"t_{uuid.uuid4().hex[:12]}", text_search_config="klingon")


def test_bad_queries_are_one_line_errors(store, products) -> None:  # type: ignore[no-untyped-def]
    for query in ("the and of", "!!", ""):
        with pytest.raises(InvalidQuery) as error:
            store.search(products, query, 3, mode="lexical")
        assert "\n" not in str(error.value)
        if query:
            assert "no searchable word" in str(error.value)
    with pytest.raises(InvalidQuery, match="Unknown search mode 'hybird'"):
        store.search(products, "filter", 3, mode="hybird")
    with pytest.raises(InvalidQuery, match="needs the query as text"):
        store.search(products, store.query_vector(products, "filter"), 3, mode="hybrid")
    # no weight above 0: every score 0, an arbitrary order; fewer candidates per side than k: fewer hits
    with pytest.raises(InvalidQuery, match=r"at least one weight above 0, e.g. \(1, 0\)"):
        store.search(products, "filter", 5, mode="hybrid", weights=(0, 0))
    with pytest.raises(InvalidQuery, match=r"candidates=3 is below k=5.*candidates of at least k"):
        store.search(products, "filter", 5, mode="hybrid", candidates=3)
    with pytest.raises(InvalidQuery, match="candidates=3 is below k=5"):
        store.search_many(products, ["filter"], 5, mode="hybrid", candidates=3)
    assert len(store.search(products, "filter", 5, mode="hybrid", candidates=5)) == 5
    assert len(store.search(products, "filter", 5, candidates=3)) == 5  # a semantic search has no sides
    # hybrid with only stop words still answers, by meaning alone
    hits = store.search(products, "the and of", 3, mode="hybrid")
    assert hits and all(h.lexical_rank is None for h in hits)


def test_rerank_reorders_hybrid_candidates(store, products, tiny_cross_encoder_path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.rerank import Reranker, search_and_rerank

    reranker = Reranker(str(tiny_cross_encoder_path))
    query = "spare part QV-4471Z"
    candidates = store.search(products, query, 5, mode="hybrid")
    reranked = search_and_rerank(store, products, query, candidates=5, top_k=5, reranker=reranker, mode="hybrid")
    assert sorted(r.hit.external_id for r in reranked) == sorted(ids(candidates))
    assert "manual" in [r.hit.external_id for r in reranked]  # found by words only, then reranked
    scores = [r.rerank_score for r in reranked]
    assert scores == sorted(scores, reverse=True)


def test_cli_modes(capsys, store, products) -> None:  # type: ignore[no-untyped-def]
    import json

    from semsim_pg.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["-q", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("search", "spare part QV-4471Z", "-c", products, "-k", "3", "--hybrid", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and "manual" in [h["external_id"] for h in hits]
    assert {"score", "dense_rank", "lexical_rank", "similarity", "lexical_score"} <= set(hits[0])
    manual = next(h for h in hits if h["external_id"] == "manual")
    assert manual["lexical_rank"] == 1
    code, out, _ = run("search", "XR-7734B", "-c", products, "--mode", "lexical")
    assert code == 0 and "f1" in out and "words   1" in out
    code, out, err = run("search", "filter", "-c", products, "--mode", "hybird")
    assert code == 1 and out == "" and err.count("\n") == 1 and "--mode 'hybird'" in err
    code, out, err = run("search", "the of and", "-c", products, "--mode", "lexical")
    assert code == 1 and err.count("\n") == 1 and "no searchable word" in err


def test_eval_retrieval_hybrid_beside_semantic(capsys, store, collection_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from semsim_pg.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"_id": i, "title": "", "text": t}) for i, t, _ in [*FILTERS, *GENERAL, MANUAL]) + "\n"
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "spare part QV-4471Z"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "marathon runners"})
        + "\n"
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tmanual\t1\nq2\tg6\t1\n")
    code = main(
        [
            "-q",
            "eval",
            "retrieval",
            "--corpus",
            str(corpus),
            "--queries",
            str(tmp_path / "queries.jsonl"),
            "--qrels",
            str(tmp_path / "qrels.tsv"),
            "-c",
            collection_name,
            "--mode",
            "hybrid",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    semantic, hybrid = report["stages"]
    assert semantic["name"].startswith("bi-encoder") and hybrid["name"].startswith("hybrid")
    # the manual is found by its part number only: hybrid ranks it higher than meaning alone
    assert hybrid["metrics"]["mrr@10"] > semantic["metrics"]["mrr@10"]


def test_term_frequency_is_read_back_exactly_from_ts_rank(engine) -> None:  # type: ignore[no-untyped-def]
    """BM25's tf comes from ts_rank (no unnest per row): it must equal the count of positions."""
    from sqlalchemy.dialects import postgresql

    from semsim_pg.queries.hybrid import term_frequency

    words = [f"w{n}x" for n in range(1, 61)]
    text = " ".join(" ".join([word] * n) for n, word in enumerate(words, 1)) + " many" * 300
    expression = term_frequency(
        sa.literal_column("x.v"), sa.literal_column("array_to_tsvector(ARRAY[u.lexeme])::text::tsquery")
    )
    tf_sql = str(expression.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[no-untyped-call]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT u.lexeme, array_length(u.positions, 1), {tf_sql}"
                " FROM (SELECT to_tsvector('simple', :t) AS v) x, unnest(x.v) u"
            ),
            {"t": text},
        ).all()
    assert len(rows) == 61
    for lexeme, positions, tf in rows:
        assert tf == positions, lexeme
    assert dict((r[0], r[2]) for r in rows)["many"] >= 255  # as many as the tsvector keeps (not 300)
