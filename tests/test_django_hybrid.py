"""hybrid_search(): words and meaning fused in one statement; both ranks and scores; chaining; bad input."""

from __future__ import annotations

import math
import re

import pytest
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q

from semsim_pg.errors import ConfigurationError, InvalidQuery
from tests.djangoapp.models import Article, Category, Note, Paper
from tests.djangoapp.testing import CORPUS

pytestmark = pytest.mark.django_db

#: rows whose rare words a model blurs: a product code, found by words, not by meaning
EXTRA = [
    ("Error XR7734 at checkout", "The payment page shows code XR7734 when the card is declined.", True),
    ("Hidden draft about XR7734", "Internal note: XR7734 is caused by the payment provider timeout.", False),
]
QUERY = "password login"


@pytest.fixture()
def articles(django_capture_on_commit_callbacks, encoder):  # type: ignore[no-untyped-def]
    category = Category.objects.create(name="help")
    with django_capture_on_commit_callbacks(execute=True):
        objs = [Article.objects.create(title=t, body=b, published=p, category=category) for t, b, p in CORPUS + EXTRA]
    return {a.title: a for a in objs}


def _rrf(rank: int | None, weight: float = 1.0, rrf_k: int = 60) -> float:
    return 0.0 if rank is None else weight / (rrf_k + rank)


def test_ranks_scores_and_fusion(articles) -> None:  # type: ignore[no-untyped-def]
    rows = list(Article.objects.hybrid_search(QUERY, k=8))
    assert len(rows) == 8
    assert rows[0].title == "Reset your password"  # first on both sides
    for r in rows:
        assert r.score == pytest.approx(_rrf(r.dense_rank) + _rrf(r.lexical_rank), rel=1e-9)
        assert r.similarity == pytest.approx(1 - r.distance, abs=1e-6)
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    # each side's ranks follow its own score: dense by similarity, lexical by BM25
    dense = sorted((r for r in rows if r.dense_rank is not None), key=lambda r: r.dense_rank)
    assert [r.similarity for r in dense] == sorted((r.similarity for r in dense), reverse=True)
    lexical = sorted((r for r in rows if r.lexical_rank is not None), key=lambda r: r.lexical_rank)
    assert {r.title for r in lexical} == {"Reset your password", "Locked out of your account"}
    assert [r.lexical_score for r in lexical] == sorted((r.lexical_score for r in lexical), reverse=True)
    assert all(r.lexical_score == 0 for r in rows if r.lexical_rank is None)


def test_words_find_what_meaning_blurs(articles) -> None:  # type: ignore[no-untyped-def]
    code = "XR7734"
    semantic = list(Article.objects.filter(published=True).semantic_search(code, k=2).values_list("title", flat=True))
    hybrid = list(Article.objects.filter(published=True).hybrid_search(code, k=2))
    assert hybrid[0].title == "Error XR7734 at checkout"
    assert hybrid[0].lexical_rank == 1
    # the queryset's filter applies to the lexical side too: the unpublished row holding the code is not a candidate
    assert all(r.published for r in hybrid)
    assert [r.lexical_rank for r in hybrid].count(None) == 1
    assert semantic  # the dense side runs as well
    everything = list(Article.objects.hybrid_search(code, k=2).values_list("title", "lexical_rank"))
    assert {t for t, rank in everything if rank is not None} == {
        "Error XR7734 at checkout",
        "Hidden draft about XR7734",
    }


def test_lexical_side_matches_the_core(articles, store, collection_name) -> None:  # type: ignore[no-untyped-def]
    """The same texts in a core collection: the same BM25 scores and lexical ranks (the core's own SQL)."""
    objs = list(Article.objects.order_by("pk"))
    store.create_collection(collection_name, text_search_config="english")
    store.upsert(collection_name, [{"id": str(a.pk), "text": f"{a.title} {a.body}"} for a in objs])
    query = "card declined at the payment page"
    core = {
        h.external_id: h
        for h in store.search(collection_name, query, k=len(objs), mode="hybrid", candidates=len(objs))
        if h.lexical_rank is not None
    }
    django = {
        str(r.pk): r for r in Article.objects.hybrid_search(query, k=len(objs), candidates=len(objs)) if r.lexical_rank
    }
    assert len(django) >= 3
    assert set(django) == set(core)
    for pk, row in django.items():
        assert row.lexical_rank == core[pk].lexical_rank
        assert row.lexical_score == pytest.approx(core[pk].lexical_score, rel=1e-9)


def test_lazy_one_statement_and_chaining(articles, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_num_queries(0):
        qs = Article.objects.filter(published=True).hybrid_search(QUERY, k=5).select_related("category")
    with django_assert_num_queries(1) as captured:
        rows = list(qs)
        assert {r.category.name for r in rows} == {"help"}
    sql = captured.captured_queries[0]["sql"]
    assert sql.count("INNER JOIN (WITH raw_terms") == 1  # both searches run once, in one statement
    titles = [r.title for r in rows]
    assert sorted(titles) == list(qs.order_by("title").values_list("title", flat=True))
    assert list(qs.reverse().values_list("title", flat=True)) == titles[::-1]
    assert qs.count() == 5
    assert qs.filter(title__startswith="Reset").count() == 1
    # an OR on a hit column never lets other rows in (the join stays INNER)
    assert qs.filter(Q(score__gt=1) | Q(title="Shipping times")).count() == ("Shipping times" in titles)
    assert set(qs.in_bulk()) == {r.pk for r in rows}
    values = list(qs.values("title", "score", "dense_rank", "lexical_rank", "lexical_score", "similarity"))
    assert [v["title"] for v in values] == titles
    assert Article.objects.filter(pk__in=qs.values("pk")).count() == 5  # as a subquery (aliases relabelled)
    pages = Paginator(Article.objects.hybrid_search(QUERY, k=None), 4)
    assert pages.count == len(Article.objects.filter(semsim_embeddings__isnull=False))
    assert [r.title for r in pages.page(1)] == list(
        Article.objects.hybrid_search(QUERY, k=None).values_list("title", flat=True)[:4]
    )
    assert qs.exists()


def test_ordering_before_breaks_ties_and_weights(articles) -> None:  # type: ignore[no-untyped-def]
    dense_only = list(Article.objects.hybrid_search(QUERY, k=5, weights=(1.0, 0.0)))
    semantic = list(Article.objects.semantic_search(QUERY, k=5).values_list("pk", flat=True))
    assert [r.pk for r in dense_only] == semantic
    words_first = list(Article.objects.hybrid_search(QUERY, k=2, weights=(0.0, 1.0)))
    assert [r.lexical_rank for r in words_first] == [1, 2]
    wide = list(Article.objects.hybrid_search(QUERY, k=3, rrf_k=0))
    assert wide[0].score == pytest.approx(2.0)  # 1/(0+1) twice
    # k=None: every fused candidate, the union of each side's top 1 (here they differ)
    query = "what should I feed my kitten"
    union = [r.pk for r in Article.objects.hybrid_search(query + " XR7734", k=None, candidates=1)]
    assert len(union) == 2 and articles["Feeding cats"].pk in union
    tied = list(Article.objects.order_by("-title").hybrid_search(QUERY, k=12, weights=(0.0, 0.0)))
    assert [r.title for r in tied] == sorted((r.title for r in tied), reverse=True)  # all scores 0: the ordering


def test_min_similarity_exact_and_stop_words(articles) -> None:  # type: ignore[no-untyped-def]
    rows = list(Article.objects.hybrid_search("XR7734", k=6, min_similarity=0.3))
    assert rows and all(r.similarity >= 0.3 for r in rows)
    assert len(rows) < len(list(Article.objects.hybrid_search("XR7734", k=6)))
    assert list(Article.objects.hybrid_search(QUERY, k=5, exact=True).values_list("pk", flat=True)) == list(
        Article.objects.hybrid_search(QUERY, k=5).values_list("pk", flat=True)
    )
    # only stop words: no lexical candidate, answered by meaning (as the core's hybrid mode)
    meaning = list(Article.objects.hybrid_search("what is the", k=3))
    assert len(meaning) == 3 and all(r.lexical_rank is None for r in meaning)


def test_rerank_hybrid_candidates(articles, tiny_cross_encoder_path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.rerank import Reranker

    reranker = Reranker(str(tiny_cross_encoder_path))
    reranked = Article.objects.hybrid_search(QUERY, k=6).rerank(QUERY, top_k=3, reranker=reranker)
    assert len(reranked) == 3
    expected = reranker.model.predict([(QUERY, r.semantic_text()) for r in Article.objects.hybrid_search(QUERY, k=6)])
    assert [r.rerank_score for r in reranked] == pytest.approx(sorted(map(float, expected), reverse=True)[:3], rel=1e-5)
    assert all(hasattr(r, "lexical_rank") for r in reranked)


def test_bad_input(articles, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for bad in ("", "   "):
        with pytest.raises(InvalidQuery, match="empty"):
            Article.objects.hybrid_search(bad)
    with pytest.raises(InvalidQuery, match="as text"):
        Article.objects.hybrid_search([0.1] * 384)  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match="rrf_k"):
        Article.objects.hybrid_search(QUERY, rrf_k=-1)
    with pytest.raises(InvalidQuery, match="weights"):
        Article.objects.hybrid_search(QUERY, weights=(1.0, math.nan))
    with pytest.raises(InvalidQuery, match="candidates"):
        Article.objects.hybrid_search(QUERY, candidates=0)
    # fewer candidates per side than k could answer short (here the sides agree: 3 hits for k=10),
    # refused with the fix as in the core (test_hybrid.py)
    with pytest.raises(InvalidQuery, match=r"candidates=3 is below k=10.*candidates of at least k"):
        Article.objects.hybrid_search(QUERY, k=10, candidates=3)
    assert len(Article.objects.hybrid_search(QUERY, k=10, candidates=10)) == 10
    with pytest.raises(ConfigurationError, match="only known in Python"):
        Note.objects.hybrid_search(QUERY)
    with pytest.raises(TypeError, match="one search"):
        Article.objects.hybrid_search(QUERY).semantic_search(QUERY)
    monkeypatch.setattr(Article, "search_config", "klingon")
    qs = Article.objects.hybrid_search(QUERY)  # lazy: found when it runs
    for run in (list, lambda q: q.count()):
        # a savepoint each: the failed statement aborts the test's transaction, as any SQL error would
        with pytest.raises(ConfigurationError, match="'klingon' does not exist"), transaction.atomic():
            run(qs)


def test_stored_words_score_as_computed_ones(articles, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    """Paper reads its words from a generated tsvector column (GIN-indexed); Article computes them."""
    with django_capture_on_commit_callbacks(execute=True):
        for a in Article.objects.order_by("pk"):
            Paper.objects.create(title=a.title, abstract=a.body or "")
    query = "card declined at the payment page"
    computed = {(r.title, r.lexical_rank, round(r.lexical_score, 9)) for r in Article.objects.hybrid_search(query)}
    stored = {(r.title, r.lexical_rank, round(r.lexical_score, 9)) for r in Paper.objects.hybrid_search(query)}
    assert computed == stored
    assert any(rank is not None for _, rank, _ in stored)
    sql = str(Paper.objects.hybrid_search(query).query)
    assert (
        '"djangoapp_paper"."words"' in sql and len(re.findall(r"(?<![a-z_])to_tsvector\(", sql)) == 1
    )  # the query's only


def test_a_changed_text_is_searched_by_its_new_words_at_once(articles) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection

    target = articles["Baking bread at home"]
    with connection.cursor() as cursor:  # raw SQL: no signal, the vector stays stale
        cursor.execute(
            "UPDATE djangoapp_article SET body = 'Sourdough needs a zymotic starter.' WHERE id = %s", [target.pk]
        )
    (hit,) = [r for r in Article.objects.hybrid_search("zymotic", k=3) if r.lexical_rank is not None]
    assert hit.pk == target.pk and hit.lexical_rank == 1


def test_the_gin_index_recipes_serve_the_lexical_side(articles) -> None:  # type: ignore[no-untyped-def]
    """Both README recipes (an expression index on the computed words, an index on stored ones) match
    the SQL hybrid_search writes, so PostgreSQL can answer the words from them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a 12-row table is scanned otherwise
        for model, index in ((Article, "article_words"), (Paper, "paper_words")):
            sql, params = model.objects.hybrid_search("password login").query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert f"Bitmap Index Scan on {index}" in plan
