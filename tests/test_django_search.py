"""semantic_search() / similar_to(): ranking with the real model, laziness, chaining, plans, filters."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.paginator import Paginator
from django.db.models import Subquery

from django_semsim.models import companion_of
from semsim_pg.errors import DimensionMismatch, InvalidQuery
from tests.djangoapp.models import Article, Category
from tests.djangoapp.testing import CORPUS, insert_random_rows

pytestmark = pytest.mark.django_db

PASSWORD_QUERY = "I forgot my password and cannot log in"


@pytest.fixture()
def articles(django_capture_on_commit_callbacks, encoder):  # type: ignore[no-untyped-def]
    category = Category.objects.create(name="help")
    with django_capture_on_commit_callbacks(execute=True):
        objs = [Article.objects.create(title=t, body=b, published=p, category=category) for t, b, p in CORPUS]
    return {a.title: a for a in objs}


def test_ranking_best_first_with_scores(articles) -> None:  # type: ignore[no-untyped-def]
    results = list(Article.objects.semantic_search(PASSWORD_QUERY, k=3))
    assert results[0].title == "Reset your password"
    assert {r.title for r in results[1:]} & {"Locked out of your account", "Two-factor authentication"}
    sims = [r.similarity for r in results]
    assert sims == sorted(sims, reverse=True)
    for r in results:
        assert r.similarity == pytest.approx(1 - r.distance, abs=1e-6)
        assert 0 < r.similarity <= 1


def test_unrelated_query_ranks_other_topic(articles) -> None:  # type: ignore[no-untyped-def]
    top = Article.objects.semantic_search("what should I feed my kitten", k=1).get()
    assert top.title == "Feeding cats"


def test_lazy_then_one_statement(articles, django_assert_num_queries, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import django_semsim.encoding

    encodings: list[str] = []
    real = django_semsim.encoding.get_model_encoder()

    class Counting:
        def encode_query(self, text: str) -> object:
            encodings.append(text)
            return real.encode_query(text)

    monkeypatch.setattr(django_semsim.encoding, "get_model_encoder", Counting)
    with django_assert_num_queries(0):
        qs = (
            Article.objects.filter(published=True)
            .semantic_search(PASSWORD_QUERY, k=3)
            .exclude(title__startswith="Shipping")
            .select_related("category")
        )
    assert encodings == []  # building the queryset neither queries nor encodes
    # the search parameters are the connection's: the SELECT is the only statement
    with django_assert_num_queries(1) as captured:
        rows = list(qs)
        assert [r.category.name for r in rows] == ["help"] * 3  # select_related: no extra query
    assert encodings == [PASSWORD_QUERY]
    search_sql = captured.captured_queries[0]["sql"]
    assert "<=>" in search_sql and "LIMIT 3" in search_sql and "::vector(384)" in search_sql
    assert rows[0].title == "Reset your password"
    assert all(r.published for r in rows)


def test_filters_after_the_search_apply_before_k(articles) -> None:  # type: ignore[no-untyped-def]
    after = list(Article.objects.semantic_search(PASSWORD_QUERY, k=3).filter(published=True))
    before = list(Article.objects.filter(published=True).semantic_search(PASSWORD_QUERY, k=3))
    assert [a.pk for a in after] == [a.pk for a in before]
    assert len(after) == 3 and all(a.published for a in after)
    assert "Two-factor authentication" not in {a.title for a in after}


def test_values_slicing_and_pagination(articles) -> None:  # type: ignore[no-untyped-def]
    full = list(Article.objects.semantic_search(PASSWORD_QUERY).values_list("title", flat=True))
    assert len(full) == len(CORPUS)
    rows = list(Article.objects.semantic_search(PASSWORD_QUERY, k=4).values("title", "similarity"))
    assert [r["title"] for r in rows] == full[:4]
    assert rows[0]["similarity"] >= rows[-1]["similarity"]
    assert list(Article.objects.semantic_search(PASSWORD_QUERY)[2:5].values_list("title", flat=True)) == full[2:5]
    paginator = Paginator(Article.objects.semantic_search(PASSWORD_QUERY), 4)
    assert paginator.count == len(CORPUS)
    pages = [t.title for n in paginator.page_range for t in paginator.page(n)]
    assert pages == full
    assert Article.objects.semantic_search(PASSWORD_QUERY, k=4).count() == 4


def test_rows_without_vector_are_not_returned(articles) -> None:  # type: ignore[no-untyped-def]
    Article.objects.bulk_create([Article(title="Forgot password? Reset it here", body="password reset")])
    titles = set(Article.objects.semantic_search(PASSWORD_QUERY).values_list("title", flat=True))
    assert "Forgot password? Reset it here" not in titles
    assert len(titles) == len(CORPUS)


def test_vector_and_expression_queries(articles, encoder) -> None:  # type: ignore[no-untyped-def]
    by_text = list(Article.objects.semantic_search(PASSWORD_QUERY, k=3).values_list("pk", flat=True))
    vector = encoder.encode_query(PASSWORD_QUERY)
    assert list(Article.objects.semantic_search(vector, k=3).values_list("pk", flat=True)) == by_text
    assert list(Article.objects.semantic_search(vector.tolist(), k=3).values_list("pk", flat=True)) == by_text
    reset = articles["Reset your password"]
    expression = Subquery(companion_of(Article).objects.filter(source=reset).values("embedding")[:1])
    assert Article.objects.semantic_search(expression, k=1).get().pk == reset.pk
    with pytest.raises(DimensionMismatch, match="384"):
        Article.objects.semantic_search(np.ones(12), k=3)
    with pytest.raises(InvalidQuery):
        Article.objects.semantic_search("   ", k=3)
    with pytest.raises(InvalidQuery):
        Article.objects.semantic_search(PASSWORD_QUERY, k=0)
    with pytest.raises(InvalidQuery):
        Article.objects.semantic_search(PASSWORD_QUERY, iterative_scan="sometimes")


def test_similar_to_excludes_itself(articles, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    reset = articles["Reset your password"]
    with django_assert_num_queries(1):
        similar = list(Article.objects.similar_to(reset, k=3))
    assert reset.pk not in {a.pk for a in similar}
    assert similar[0].title in {"Locked out of your account", "Change your email address", "Two-factor authentication"}
    assert [a.pk for a in reset.similar_objects(k=3)] == [a.pk for a in similar]
    assert [a.pk for a in Article.objects.similar_to(reset.pk, k=3)] == [a.pk for a in similar]
    no_vector = Article.objects.bulk_create([Article(title="no vector yet")])[0]
    assert list(Article.objects.similar_to(no_vector, k=3)) == []


def test_min_similarity(articles) -> None:  # type: ignore[no-untyped-def]
    everything = list(Article.objects.semantic_search(PASSWORD_QUERY))
    threshold = (everything[1].similarity + everything[2].similarity) / 2
    kept = list(Article.objects.semantic_search(PASSWORD_QUERY, k=5, min_similarity=threshold))
    assert [a.pk for a in kept] == [a.pk for a in everything[:2]]
    assert all(a.similarity >= threshold for a in kept)


def test_plan_uses_hnsw_index_and_iterative_scan_fills_k(db) -> None:  # type: ignore[no-untyped-def]
    insert_random_rows(4000, published_every=2)  # half of 4,000 rows published
    query = np.random.default_rng(1).standard_normal(384)
    index = companion_of(Article)._meta.indexes[0].name
    for qs in (Article.objects.all(), Article.objects.filter(published=True)):
        plan = qs.semantic_search(query, k=10).explain()
        assert f"Index Scan using {index}" in plan, plan
        assert "Sort" not in plan.split("Index Scan")[0], plan  # the index gives the order
    # Without iterative scans the index returns ef_search candidates and the filter drops most of them.
    few = list(Article.objects.filter(published=True).semantic_search(query, k=10, ef_search=10, iterative_scan="off"))
    full = list(Article.objects.filter(published=True).semantic_search(query, k=10))  # SEMSIM: strict_order
    assert len(few) < 10
    assert len(full) == 10 and all(a.published for a in full)
    distances = [a.distance for a in full]
    assert distances == sorted(distances)


def _setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [name])
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_search_settings_per_connection_and_per_statement(encoder, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    from django.db import transaction

    from django_semsim.conf import get_config

    config = get_config()
    Article.objects.bulk_create([Article(title=t, body=b) for t, b, _ in CORPUS[:3]])
    # the configured values are the session's from the moment the connection opened
    assert _setting("hnsw.ef_search") == str(config.ef_search)
    assert _setting("hnsw.iterative_scan") == config.iterative_scan
    with django_assert_num_queries(1):  # autocommit, default values: the SELECT alone
        list(Article.objects.semantic_search(PASSWORD_QUERY, k=2))
    other = config.ef_search + 37
    # other values: BEGIN, set_config(..., true), the SELECT, COMMIT: they last for this statement only
    with django_assert_num_queries(4) as captured:
        assert list(Article.objects.semantic_search(PASSWORD_QUERY, k=2, ef_search=other)) == []  # no vectors
    assert f"'hnsw.ef_search', '{other}', true" in " ".join(q["sql"] for q in captured.captured_queries)
    assert _setting("hnsw.ef_search") == str(config.ef_search)
    with transaction.atomic():  # inside the caller's transaction: set, run, and set back
        list(Article.objects.semantic_search(PASSWORD_QUERY, k=2, ef_search=other, iterative_scan="off"))
        assert _setting("hnsw.ef_search") == str(config.ef_search)
        assert _setting("hnsw.iterative_scan") == config.iterative_scan
