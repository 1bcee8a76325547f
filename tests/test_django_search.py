"""semantic_search() / similar_to(): ranking with the real model, laziness, chaining, plans, filters."""

from __future__ import annotations

import re

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


def test_values_slicing_and_pagination(articles, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    full = list(Article.objects.semantic_search(PASSWORD_QUERY, k=None).values_list("title", flat=True))
    assert len(full) == len(CORPUS)
    rows = list(Article.objects.semantic_search(PASSWORD_QUERY, k=4).values("title", "similarity"))
    assert [r["title"] for r in rows] == full[:4]
    assert rows[0]["similarity"] >= rows[-1]["similarity"]
    assert list(Article.objects.semantic_search(PASSWORD_QUERY)[2:5].values_list("title", flat=True)) == full[2:5]
    paginator = Paginator(Article.objects.semantic_search(PASSWORD_QUERY, k=None), 4)
    with django_assert_num_queries(2):  # a page: its count and its rows
        assert paginator.count == len(CORPUS)
        first = [t.title for t in paginator.page(1)]
    assert first == full[:4]
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


@pytest.mark.parametrize("plain", [False, True], ids=["semantic-queryset", "plain-queryset"])
def test_similar_objects_are_among_the_default_managers_rows(articles, monkeypatch, plain: bool) -> None:  # type: ignore[no-untyped-def]
    from django.db.models import QuerySet

    from django_semsim.query import SemanticQuerySet

    reset = articles["Reset your password"]
    hidden = {a.pk for a in articles.values() if not a.published}
    assert hidden & {a.pk for a in reset.similar_objects(k=None)}  # found while the manager shows them
    manager = Article._default_manager
    shown = manager.get_queryset
    # a site whose default manager hides drafts (a plain QuerySet's too: its filters are kept)
    published = (
        (lambda: QuerySet(Article).filter(published=True)) if plain else (lambda: shown().filter(published=True))
    )
    monkeypatch.setattr(manager, "get_queryset", published)
    similar = list(reset.similar_objects(k=None))
    assert similar and not hidden & {a.pk for a in similar}
    expected = SemanticQuerySet(Article).filter(published=True).similar_to(reset, k=None)
    assert [a.pk for a in similar] == [a.pk for a in expected]
    assert [a.pk for a in reset.similar_objects(k=2)] == [a.pk for a in similar[:2]]


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
    # an object of another model is refused, not read as "this model's row with the same pk"
    category = Category.objects.create(name="another table")
    with pytest.raises(
        InvalidQuery, match="searches Article objects: give one of them or its primary key, not a Category"
    ):
        Article.objects.similar_to(category, k=3)


def test_min_similarity(articles) -> None:  # type: ignore[no-untyped-def]
    everything = list(Article.objects.semantic_search(PASSWORD_QUERY))
    threshold = (everything[1].similarity + everything[2].similarity) / 2
    kept = list(Article.objects.semantic_search(PASSWORD_QUERY, k=5, min_similarity=threshold))
    assert [a.pk for a in kept] == [a.pk for a in everything[:2]]
    assert all(a.similarity >= threshold for a in kept)


@pytest.mark.slow
def test_plan_uses_hnsw_index_and_iterative_scan_fills_k(db) -> None:  # type: ignore[no-untyped-def]
    insert_random_rows(4000, published_every=2)  # half of 4,000 rows published
    query = np.random.default_rng(1).standard_normal(384)
    index = companion_of(Article)._meta.indexes[0].name
    for qs in (Article.objects.all(), Article.objects.filter(published=True)):
        lines = qs.semantic_search(query, k=10).explain().splitlines()
        scan = next(i for i, line in enumerate(lines) if f"Index Scan using {index}" in line)
        limit = max(i for i, line in enumerate(lines[:scan]) if "Limit" in line)
        # the k nearest: a LIMIT fed by the index, no sort between them (the index gives the order)
        assert not any("Sort" in line for line in lines[limit:scan]), "\n".join(lines)
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


# QuerySet semantics after the search -------------------------------------------------------------
def test_filters_after_the_search_narrow_the_k_nearest(articles) -> None:  # type: ignore[no-untyped-def]
    nearest = list(Article.objects.semantic_search(PASSWORD_QUERY, k=3))
    after = list(Article.objects.semantic_search(PASSWORD_QUERY, k=3).filter(published=True))
    assert [a.pk for a in after] == [a.pk for a in nearest if a.published]  # a result, then filtered
    before = list(Article.objects.filter(published=True).semantic_search(PASSWORD_QUERY, k=3))
    assert len(before) == 3 and all(a.published for a in before)  # filtered, then the 3 nearest


def test_order_by_reverse_distinct_in_bulk_values_annotate_aggregate(articles, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    from django.db.models import Avg, Count, F, Max

    search = Article.objects.semantic_search(PASSWORD_QUERY, k=4)
    best_first = list(search)
    assert len(best_first) == 4
    with django_assert_num_queries(1):
        by_title = list(search.order_by("title"))
    assert [a.title for a in by_title] == sorted(a.title for a in best_first)
    assert [a.pk for a in search.reverse()] == [a.pk for a in reversed(best_first)]
    assert [a.pk for a in search.distinct()] == [a.pk for a in best_first]
    assert set(search.in_bulk()) == {a.pk for a in best_first}
    values = list(search.values("title", "similarity"))
    assert [v["title"] for v in values] == [a.title for a in best_first]
    assert values[0]["similarity"] == pytest.approx(best_first[0].similarity)
    doubled = search.annotate(double=F("views") * 2 + 1, n=Count("category"))
    assert [a.double for a in doubled] == [2 * a.views + 1 for a in best_first]
    with django_assert_num_queries(1):
        summary = search.aggregate(best=Max("similarity"), mean=Avg("similarity"), n=Count("pk"))
    assert summary["n"] == 4
    assert summary["best"] == pytest.approx(best_first[0].similarity)
    assert summary["mean"] == pytest.approx(sum(a.similarity for a in best_first) / 4)
    assert search.count() == 4 and search.exists()
    assert search.filter(title="Reset your password").get().pk == best_first[0].pk
    assert [a.pk for a in search[1:3]] == [a.pk for a in best_first[1:3]]


def test_an_ordering_before_the_search_breaks_ties(articles) -> None:  # type: ignore[no-untyped-def]
    # three rows with the same text: the same similarity, so only the earlier ordering tells them apart
    twins = Article.objects.bulk_create([Article(title="Reset your password", body=None, views=v) for v in (5, 9, 7)])
    from django_semsim.sync import drain

    drain(Article, pks=[a.pk for a in twins])
    by_views = list(Article.objects.order_by("-views").semantic_search("Reset your password", k=3))
    assert [a.views for a in by_views] == [9, 7, 5]
    by_views_up = list(Article.objects.order_by("views").semantic_search("Reset your password", k=3))
    assert [a.views for a in by_views_up] == [5, 7, 9]


def test_k_default_none_and_bounds(articles) -> None:  # type: ignore[no-untyped-def]
    from django.test import override_settings

    assert Article.objects.semantic_search(PASSWORD_QUERY).count() == min(10, len(CORPUS))
    with override_settings(SEMSIM={"SYNC": "inline", "DEFAULT_K": 2}):
        assert Article.objects.semantic_search(PASSWORD_QUERY).count() == 2
        assert Article.objects.semantic_search(PASSWORD_QUERY, k=None).count() == len(CORPUS)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(InvalidQuery, match="k must be"):
            Article.objects.semantic_search(PASSWORD_QUERY, k=bad)


@pytest.mark.parametrize(("query", "shown"), [(None, "None"), ("", "''"), ("   ", "'   '"), (42, "42"), (b"x", "b'x'")])
def test_bad_queries_say_what_was_given(query: object, shown: str) -> None:
    with pytest.raises(InvalidQuery, match=rf"got .*{re.escape(shown)}"):
        Article.objects.semantic_search(query)  # type: ignore[arg-type]


@pytest.mark.slow
def test_exact_search_scans_every_vector(db) -> None:  # type: ignore[no-untyped-def]
    insert_random_rows(3000, published_every=1)
    query = np.random.default_rng(3).standard_normal(384)
    index = companion_of(Article)._meta.indexes[0].name
    exact = Article.objects.semantic_search(query, k=10, exact=True)
    assert f"Index Scan using {index}" not in exact.explain()
    assert f"Index Scan using {index}" in Article.objects.semantic_search(query, k=10).explain()
    # the reference: cosine similarity of every stored vector, in NumPy
    stored = companion_of(Article).objects.values_list("source_id", "embedding")
    ids = np.array([pk for pk, _ in stored])
    matrix = np.array([vector for _, vector in stored], dtype=np.float64)
    scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    assert [a.pk for a in exact] == [int(pk) for pk in ids[np.argsort(-scores)[:10]]]


# public expressions ------------------------------------------------------------------------------
def test_similarity_and_distance_expressions(articles) -> None:  # type: ignore[no-untyped-def]
    from django_semsim.expressions import Distance, Similarity

    ranked = {a.pk: a.similarity for a in Article.objects.semantic_search(PASSWORD_QUERY, k=None)}
    annotated = Article.objects.annotate(sim=Similarity(PASSWORD_QUERY), dist=Distance(PASSWORD_QUERY))
    for a in annotated:
        assert a.sim == pytest.approx(ranked[a.pk], abs=1e-5)
        assert a.dist == pytest.approx(1 - ranked[a.pk], abs=1e-5)
    threshold = sorted(ranked.values())[-3]
    close = Article.objects.alias(sim=Similarity(PASSWORD_QUERY)).filter(sim__gte=threshold).order_by("-sim")
    assert [a.pk for a in close] == sorted(ranked, key=lambda pk: -ranked[pk])[:3]
    ordered = Article.objects.order_by(Distance(PASSWORD_QUERY).asc())[:2]
    assert [a.pk for a in ordered] == sorted(ranked, key=lambda pk: -ranked[pk])[:2]
    no_vector = Article.objects.bulk_create([Article(title="no vector yet")])[0]
    assert Article.objects.annotate(sim=Similarity(PASSWORD_QUERY)).get(pk=no_vector.pk).sim is None


def test_expressions_through_a_relation(encoder, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from django_semsim.expressions import Similarity
    from django_semsim.faq.models import FAQ, FAQPhrasing

    with django_capture_on_commit_callbacks(execute=True):
        reset = FAQ.objects.create(question="How do I reset my password?", answer="Use the login page.")
        parcel = FAQ.objects.create(question="When will my parcel arrive?", answer="Within a week.")
        FAQPhrasing.objects.create(faq=parcel, text="where is my order")
        FAQPhrasing.objects.create(faq=reset, text="forgot my login")
    # each phrasing ranked by its entry's question: FAQPhrasing -> faq -> the FAQ's vectors
    phrasings = FAQPhrasing.objects.annotate(entry_sim=Similarity(PASSWORD_QUERY, through="faq")).order_by("-entry_sim")
    assert [p.faq_id for p in phrasings] == [reset.pk, parcel.pk]
    direct = {f.pk: f.sim for f in FAQ.objects.annotate(sim=Similarity(PASSWORD_QUERY))}
    for p in phrasings:
        assert p.entry_sim == pytest.approx(direct[p.faq_id], abs=1e-6)
    with pytest.raises(InvalidQuery, match="has no relation"):
        list(FAQPhrasing.objects.annotate(sim=Similarity(PASSWORD_QUERY, through="nothing")))
