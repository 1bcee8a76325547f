"""Compiled searches (django_semsim.prepared): a search evaluated as it was built reuses the SQL that
Django compiled for its shape, with its own vector; anything else is compiled by Django. Each
statement sent is checked against Django's own compile of the same queryset and each result against
the built path's, never against timings."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.db.models import F, Q
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_semsim import prepared
from tests.djangoapp.models import Article, Category, Report
from tests.djangoapp.testing import CORPUS

pytestmark = pytest.mark.django_db

PASSWORD = "I forgot my password and cannot log in"
KITTEN = "what should I feed my kitten"

Search = Callable[[Any], Any]
#: searches kept as recipes: each its own shape, so its own statement
SHAPES: dict[str, Search] = {
    "plain": lambda q: Article.objects.semantic_search(q, k=3),
    "other k": lambda q: Article.objects.semantic_search(q, k=4),
    "published": lambda q: Article.objects.filter(published=True).semantic_search(q, k=3),
    "unpublished": lambda q: Article.objects.filter(published=False).semantic_search(q, k=3),
    "views >= 5": lambda q: Article.objects.filter(views__gte=5).semantic_search(q, k=3),
    "views >= 6": lambda q: Article.objects.filter(views__gte=6).semantic_search(q, k=3),
    "excluded": lambda q: Article.objects.exclude(views__gte=5).semantic_search(q, k=3),
    "or": lambda q: Article.objects.filter(Q(views=1) | Q(views__gte=8)).semantic_search(q, k=3),
    "in": lambda q: Article.objects.filter(views__in=[0, 2, 4, 6]).semantic_search(q, k=3),
    "title": lambda q: Article.objects.filter(title__startswith="Reset").semantic_search(q, k=3),
    "ordered first": lambda q: Article.objects.order_by("-views").semantic_search(q, k=3),
    "min_similarity": lambda q: Article.objects.semantic_search(q, k=3, min_similarity=0.2),
    "other min_similarity": lambda q: Article.objects.semantic_search(q, k=3, min_similarity=0.4),
    "ef_search": lambda q: Article.objects.semantic_search(q, k=3, ef_search=77),
    "exact": lambda q: Article.objects.semantic_search(q, k=3, exact=True),
    "every row": lambda q: Article.objects.semantic_search(q, k=None),
    "sliced": lambda q: Article.objects.semantic_search(q, k=4)[1:3],
    "sliced twice": lambda q: Article.objects.semantic_search(q, k=4)[1:][:1],
    "page": lambda q: Article.objects.filter(published=True).semantic_search(q, k=None)[2:4],
}
#: searches Django builds and compiles: chained after the search, or over a base with no key
BUILT: dict[str, Search] = {
    "order_by after": lambda q: Article.objects.semantic_search(q, k=4).order_by("title"),
    "filter after": lambda q: Article.objects.semantic_search(q, k=4).filter(published=True),
    "reverse after": lambda q: Article.objects.semantic_search(q, k=4).reverse(),
    "join first": lambda q: Article.objects.filter(category__name="help").semantic_search(q, k=3),
    "select_related first": lambda q: Article.objects.select_related("category").semantic_search(q, k=3),
}


@pytest.fixture()
def rows(django_capture_on_commit_callbacks, encoder) -> list[Article]:  # type: ignore[no-untyped-def]
    help_desk = Category.objects.create(name="help")
    with django_capture_on_commit_callbacks(execute=True):
        objs = [
            Article.objects.create(title=t, body=b, published=p, views=i, category=help_desk if i % 2 else None)
            for i, (t, b, p) in enumerate(CORPUS)
        ]
    prepared.clear()
    return objs


def _evaluated(queryset: Any) -> tuple[list[tuple[Any, float]], str]:
    """(pk, similarity) of each row, and the search statement the evaluation sent."""
    with CaptureQueriesContext(connection) as captured:
        found = [(row.pk, row.similarity) for row in queryset]
    (statement,) = [q["sql"] for q in captured.captured_queries if "<=>" in q["sql"]]
    return found, statement


def _compiled_by_django(queryset: Any) -> str:
    """The statement Django compiles for ``queryset`` (its Query built and compiled, no cache)."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        return str(cursor.mogrify(sql, params))


def _check(search: Search, query: Any) -> str:
    """Evaluate ``search(query)``: the statement sent is Django's for it, the rows are the built path's."""
    found, statement = _evaluated(search(query))
    assert statement == _compiled_by_django(search(query))
    rebuilt = search(query)
    assert rebuilt.query is not None  # the Query built: Django compiles it when evaluated
    built = [(row.pk, row.similarity) for row in rebuilt]
    assert [pk for pk, _ in found] == [pk for pk, _ in built]
    assert [s for _, s in found] == pytest.approx([s for _, s in built], abs=1e-6)
    return statement


def test_a_repeated_search_reuses_the_statement_with_its_own_vector(rows, encoder) -> None:  # type: ignore[no-untyped-def]
    password, kitten = encoder.encode_query(PASSWORD), encoder.encode_query(KITTEN)
    first = _check(SHAPES["plain"], password)
    assert prepared.cache_info()["misses"] == 1 and prepared.cache_info()["shapes"] == 1
    hits = prepared.cache_info()["hits"]
    second = _check(SHAPES["plain"], kitten)
    assert prepared.cache_info()["hits"] == hits + 1 and prepared.cache_info()["shapes"] == 1
    assert first != second  # the same SQL text with the other vector in it
    assert next(iter(SHAPES["plain"](kitten))).title == "Feeding cats"
    # a text query has the shape of a vector query: encoded when evaluated, then the same statement
    assert _check(SHAPES["plain"], KITTEN) == second
    assert prepared.cache_info()["shapes"] == 1


def test_each_shape_gets_its_own_statement(rows, encoder) -> None:  # type: ignore[no-untyped-def]
    password, kitten = encoder.encode_query(PASSWORD), encoder.encode_query(KITTEN)
    statements = {}
    for name, search in SHAPES.items():
        statements[name] = _check(search, password)
        _check(search, kitten)  # the second time from the cache, with the other vector
    assert len(set(statements.values())) == len(SHAPES)
    assert prepared.cache_info()["shapes"] == len(SHAPES)
    assert prepared.cache_info()["misses"] == len(SHAPES)
    # what each shape means, on the rows it returned
    assert all(row.published for row in SHAPES["published"](kitten))
    assert not any(row.published for row in SHAPES["unpublished"](kitten))
    assert all(row.views >= 6 for row in SHAPES["views >= 6"](kitten))
    assert all(row.views < 5 for row in SHAPES["excluded"](kitten))
    assert all(row.similarity >= 0.4 for row in SHAPES["other min_similarity"](kitten))
    assert len(list(SHAPES["every row"](kitten))) == len(CORPUS)


def found_plain_second(vector: Any) -> Any:
    built = SHAPES["plain"](vector)
    assert built.query is not None  # built: Django compiles it
    return list(built)[1].pk


def test_all_keeps_a_search_a_recipe(rows, encoder) -> None:  # type: ignore[no-untyped-def]
    """Generic views call all() on the queryset they get: the copy sends the compiled statement too."""
    password, kitten = encoder.encode_query(PASSWORD), encoder.encode_query(KITTEN)
    statement = _check(SHAPES["published"], password)
    assert prepared.cache_info()["shapes"] == 1
    hits = prepared.cache_info()["hits"]
    search = SHAPES["published"](kitten)
    copy = search.all().all()
    found, sent = _evaluated(copy)
    assert prepared.cache_info()["hits"] == hits + 1 and prepared.cache_info()["shapes"] == 1
    assert sent == _compiled_by_django(SHAPES["published"](kitten)) != statement
    assert found[0][0] == Article.objects.get(title="Feeding cats").pk
    assert search._result_cache is None  # the original is untouched and evaluates alike
    assert [(pk, pytest.approx(s)) for pk, s in found] == [(row.pk, row.similarity) for row in search]
    # a paginator counts (on a copy), then takes its page as a sliced recipe
    from django.core.paginator import Paginator

    shapes = prepared.cache_info()["shapes"]
    paginated = Article.objects.semantic_search(kitten, k=5)
    page = Paginator(paginated, 2).page(2)
    assert paginated._semsim_recipe is not None and page.paginator.count == 5
    reference = Article.objects.semantic_search(kitten, k=5)
    assert reference.query is not None  # built: Django compiles it
    assert [a.pk for a in page] == [a.pk for a in reference][2:4]
    assert prepared.cache_info()["shapes"] == shapes + 1  # the [2:4] shape
    # an index runs the sliced search through its compiled statement too; negative ones fail as in Django
    assert SHAPES["plain"](kitten)[1].pk == found_plain_second(kitten)
    with pytest.raises(ValueError, match="Negative indexing"):
        SHAPES["plain"](kitten)[-1]
    # a text search stays lazy through all() and is logged as one (its log survives the copy)
    assert SHAPES["plain"](KITTEN).all()._semsim_log == (KITTEN, 3, "semantic")


def test_slices_at_the_edges_behave_as_in_django(rows, encoder) -> None:  # type: ignore[no-untyped-def]
    kitten = encoder.encode_query(KITTEN)
    assert list(SHAPES["plain"](kitten)[2:2]) == [] and list(SHAPES["plain"](kitten)[5:2]) == []
    assert list(SHAPES["plain"](kitten)[5:]) == []
    with pytest.raises(IndexError):
        SHAPES["plain"](kitten)[7]
    assert SHAPES["plain"](kitten)[:2].count() == 2
    first = SHAPES["plain"](kitten).first()
    assert first is not None and first.title == "Feeding cats"


def test_chained_searches_and_bases_without_a_key_are_compiled_by_django(rows, encoder) -> None:  # type: ignore[no-untyped-def]
    password, kitten = encoder.encode_query(PASSWORD), encoder.encode_query(KITTEN)
    for search in BUILT.values():
        _check(search, password)
        _check(search, kitten)
    assert prepared.cache_info()["shapes"] == 0
    titles = [row.title for row in BUILT["order_by after"](kitten)]
    assert titles == sorted(titles)


def test_a_search_is_built_only_when_its_query_is_needed(rows, django_assert_num_queries, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django_semsim.encoding import get_model_encoder

    encodings: list[str] = []
    model = get_model_encoder()  # the process-wide encoder: count what the searches ask of it
    monkeypatch.setattr(
        model, "encode_query", lambda text, encode=model.encode_query: [encodings.append(text), encode(text)][1]
    )
    with django_assert_num_queries(0):
        search = Article.objects.semantic_search(PASSWORD, k=3)
        # the Query is built for whoever asks for it (no statement, no encoding)
        sql = str(Article.objects.semantic_search(PASSWORD, k=3).query)
    assert "<=>" in sql and "LIMIT 3" in sql
    with django_assert_num_queries(1):
        first = list(search)
    with django_assert_num_queries(0):
        assert list(search) == first  # evaluated once, like any queryset
    assert first[0].title == "Reset your password"
    assert encodings == [PASSWORD, PASSWORD]  # str(.query) encodes to write the literal
    with django_assert_num_queries(1):
        again = list(Article.objects.semantic_search(PASSWORD, k=3))
    assert [a.pk for a in again] == [a.pk for a in first]


def test_related_manager_and_prefetch(rows, encoder, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    kitten = encoder.encode_query(KITTEN)
    help_desk = Category.objects.get(name="help")
    for _ in range(2):  # compiled, then from the cache
        with django_assert_num_queries(1):
            found = list(help_desk.article_set.semantic_search(kitten, k=3))
            assert all(a.category is help_desk for a in found)  # the related manager's instance, no query
        expected = Article.objects.filter(category=help_desk).semantic_search(kitten, k=3)
        assert expected.query is not None  # built, so compiled by Django: the reference
        assert [a.pk for a in found] == [a.pk for a in expected]
        with django_assert_num_queries(2):  # the search, then the categories
            prefetched = list(Article.objects.prefetch_related("category").semantic_search(kitten, k=4))
            assert {a.category.name if a.category else None for a in prefetched} <= {"help", None}
    assert prepared.cache_info()["hits"] == 2 and prepared.cache_info()["shapes"] == 2
    other = Category.objects.create(name="other")
    Article.objects.filter(pk=rows[0].pk).update(category=other)
    assert [a.pk for a in other.article_set.semantic_search(kitten, k=3)] == [rows[0].pk]  # its own statement


def test_a_model_split_into_passages_and_a_changed_split(
    django_capture_on_commit_callbacks, encoder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        for title, body, _ in CORPUS:
            Report.objects.create(title=title, body=" ".join([body] * 6))  # several passages each
    prepared.clear()
    kitten, password = encoder.encode_query(KITTEN), encoder.encode_query(PASSWORD)

    def search(q: Any) -> Any:
        return Report.objects.semantic_search(q, k=3)

    by_passage = _check(search, password)
    _check(search, kitten)
    assert "MATERIALIZED" in by_passage  # the best-passage reads (django_semsim.passages)
    assert next(iter(search(kitten))).title == "Feeding cats"
    monkeypatch.setattr(Report, "semantic_chunking", None)  # no split: the whole-text statement
    whole = _check(search, password)
    assert "MATERIALIZED" not in whole
    assert prepared.cache_info()["shapes"] == 2


def test_empty_pickled_and_changed_settings(rows, encoder) -> None:  # type: ignore[no-untyped-def]
    kitten = encoder.encode_query(KITTEN)
    assert list(Article.objects.filter(pk__in=[]).semantic_search(kitten, k=3)) == []
    assert list(Article.objects.none().semantic_search(kitten, k=3)) == []
    search = Article.objects.semantic_search(kitten, k=3)
    expected = [a.pk for a in search]
    copy = pickle.loads(pickle.dumps(search))
    assert [a.pk for a in copy] == expected
    assert copy.count() == 3 and [a.pk for a in copy.order_by("distance")] == expected
    assert prepared.cache_info()["shapes"] >= 1
    with override_settings(SEMSIM={"SYNC": "inline", "DEFAULT_K": 2}):
        assert prepared.cache_info()["shapes"] == 0  # a settings change forgets every statement
        assert len(list(Article.objects.semantic_search(kitten))) == 2


def test_base_shapes() -> None:
    shape = prepared.base_shape
    plain = shape(Article.objects.all().query)
    assert plain is not None
    published = shape(Article.objects.filter(published=True).query)
    assert published is not None and published != plain
    assert published != shape(Article.objects.filter(published=False).query)
    assert shape(Article.objects.filter(views=1).query) != shape(Article.objects.filter(views=2).query)
    assert shape(Article.objects.order_by("views").query) != shape(Article.objects.order_by("-views").query)
    assert shape(Article.objects.filter(views=1).query) == shape(Article.objects.filter(views=1).query)
    # operands are told apart by type, not only by Python equality (1 == 1.0 == True)
    keys = {prepared._constant_key(value) for value in (1, 1.0, True)}
    assert len(keys) == 3
    help_desk, other = Category.objects.create(name="help"), Category.objects.create(name="other")
    assert shape(help_desk.article_set.all().query) != shape(other.article_set.all().query)
    for unsupported in (
        Article.objects.filter(category__name="help"),
        Article.objects.select_related("category"),
        Article.objects.only("title"),
        Article.objects.annotate(double=F("views") * 2),
        Article.objects.filter(views=F("id")),
        Article.objects.filter(pk__in=Article.objects.filter(published=True).values("pk")),
        Article.objects.none(),
        Article.objects.extra(where=["1 = 1"]),
        Article.objects.reverse(),
        Article.objects.distinct(),
        Article.objects.select_for_update(),
        Article.objects.order_by(F("views").desc()),
    ):
        assert shape(unsupported.query) is None, unsupported.query
