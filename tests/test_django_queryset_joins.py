"""Searches over querysets Django would return a row several times (a filter across a reverse
foreign key joins one row per related row), pickled searches, and select_for_update() on them."""

from __future__ import annotations

import pickle

import pytest
from django.db import transaction
from django.db.models import BooleanField, Count, F
from django.db.models.expressions import RawSQL

from django_semsim.models import companion_of
from semsim_pg.errors import InvalidQuery
from tests.djangoapp.models import Article, Report
from tests.djangoapp.testing import CORPUS, in_thread
from tests.test_django_search import articles  # noqa: F401 - the fixture: CORPUS in one category

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("articles")]

QUERY = "I forgot my password and cannot log in"
#: three titles of the one category: filtering on them across Category's reverse foreign key
#: joins every article of the category three times (Django's own rows for such a filter)
THREE = ["Reset your password", "Shipping times", "Refund policy"]


@pytest.fixture()
def reports(django_capture_on_commit_callbacks, encoder):  # type: ignore[no-untyped-def]
    long = " ".join(f"Tip {i}: reset your password from the login page, then sign in again." for i in range(8))
    with django_capture_on_commit_callbacks(execute=True):  # texts split into several passages each
        for title, body in [("Password help", long), *[(t, b * 4) for t, b, _ in CORPUS[1:5]]]:
            Report.objects.create(title=title, body=body)


def _joined():  # type: ignore[no-untyped-def]
    return Article.objects.filter(category__article__title__in=THREE)


def _pks(queryset) -> list[int]:  # type: ignore[no-untyped-def]
    return [a.pk for a in queryset]


def test_the_join_repeats_rows_in_plain_django() -> None:  # type: ignore[no-untyped-def]
    # what the searches below must not inherit: every article three times
    assert _joined().count() == 3 * len(CORPUS)


@pytest.mark.parametrize(
    "search",
    [
        lambda qs: qs.semantic_search(QUERY, k=5),
        lambda qs: qs.semantic_search(QUERY, k=None),
        lambda qs: qs.hybrid_search("password login", k=5),
        lambda qs: qs.hybrid_search("password login", k=None),
        lambda qs: qs.similar_to(Article.objects.get(title="Reset your password"), k=5),
    ],
    ids=["semantic", "semantic-all", "hybrid", "hybrid-all", "similar_to"],
)
def test_a_joined_filter_gives_each_object_once(search) -> None:  # type: ignore[no-untyped-def]
    expected = _pks(search(Article.objects.all()))
    found = search(_joined())
    assert _pks(found) == expected  # the k nearest distinct objects, best first
    assert len(set(expected)) == len(expected)
    assert found.count() == len(expected)
    assert list(found.values_list("pk", flat=True)) == expected
    assert _pks(found[1:3]) == expected[1:3]
    assert _pks(found.order_by("title")) == _pks(Article.objects.filter(pk__in=expected).order_by("title"))
    assert [(a.pk, a.n) for a in found.annotate(n=Count("category"))] == [(pk, 1) for pk in expected]
    # a filter the join makes selective still applies: only the published articles of the category
    published = search(_joined().filter(published=True))
    assert _pks(published) == _pks(search(Article.objects.filter(published=True)))


def test_a_joined_filter_keeps_the_search_lazy_and_chained(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_num_queries(0):
        found = _joined().select_related("category").semantic_search(QUERY, k=3).filter(published=True)
    with django_assert_num_queries(1):
        rows = list(found)
        assert [a.category.name for a in rows] == ["help"] * len(rows)
    expected = [a.pk for a in Article.objects.semantic_search(QUERY, k=3) if a.published]
    assert [a.pk for a in rows] == expected
    assert all(a.similarity > 0 for a in rows)


JOINED_SEARCHES = {
    "semantic": lambda qs: qs.semantic_search(QUERY, k=5),
    "hybrid": lambda qs: qs.hybrid_search("password login", k=5),
    "similar_to": lambda qs: qs.similar_to(Article.objects.get(title="Reset your password"), k=5),
}
#: lookups across the relation the filter joined, chained after the search: Django reuses the
#: filter's join, so they read only the related rows the filter let through (a permission)
LATER = {
    "values": lambda qs: sorted(qs.values_list("pk", "category__article__title")),
    "count": lambda qs: sorted(qs.annotate(n=Count("category__article")).values_list("pk", "n")),
    "F": lambda qs: sorted(qs.annotate(t=F("category__article__title")).values_list("pk", "t")),
    "order_by": lambda qs: list(qs.order_by("category__article__title", "pk").values_list("pk", flat=True)),
}


@pytest.mark.parametrize("later", LATER)
@pytest.mark.parametrize("search", JOINED_SEARCHES)
def test_a_lookup_after_a_joined_search_keeps_the_filter(search, later) -> None:  # type: ignore[no-untyped-def]
    found = JOINED_SEARCHES[search](_joined())
    pks = _pks(found)
    assert len(pks) == len(set(pks)) == 5
    # what Django gives for the same chain on those rows
    expected = LATER[later](_joined().filter(pk__in=pks))
    assert LATER[later](found) == expected
    copy = Article.objects.all()  # its Query through pickle (Django's cache)
    copy.query = pickle.loads(pickle.dumps(found.query))
    assert LATER[later](copy) == expected
    if later == "values":
        assert {title for _, title in expected} == set(THREE)
        # a filter() chained after joins the relation anew (its own join, as in Django): rows once each
        assert _pks(found.filter(category__article__title="Refund policy")) == pks


@pytest.mark.parametrize("search", JOINED_SEARCHES)
def test_an_ordering_across_a_multi_valued_relation_gives_each_object_once(search) -> None:  # type: ignore[no-untyped-def]
    expected = _pks(JOINED_SEARCHES[search](Article.objects.all()))
    for ordered in (Article.objects.order_by("category__article__title"), _joined().order_by("-category__article")):
        assert _pks(JOINED_SEARCHES[search](ordered)) == expected
    exact = Article.objects.order_by("category__article__title").semantic_search(QUERY, k=5, exact=True)
    assert _pks(exact) == _pks(Article.objects.semantic_search(QUERY, k=5, exact=True))


def test_extra_before_a_search_is_refused_with_the_fix() -> None:  # type: ignore[no-untyped-def]
    table = Article._meta.db_table
    for raw in (
        Article.objects.extra(where=[f"{table}.published"]),
        Article.objects.extra(tables=["djangoapp_category"], where=[f"djangoapp_category.id = {table}.category_id"]),
        _joined().extra(select={"shown": f"{table}.title"}),
    ):
        for search in JOINED_SEARCHES.values():
            with pytest.raises(InvalidQuery, match="RawSQL"):
                list(search(raw))
    # the fix the message names, and .extra() after the search, read the rows of the search
    published = _pks(Article.objects.filter(published=True).semantic_search(QUERY, k=5))
    raw_sql = Article.objects.filter(RawSQL("published", [], output_field=BooleanField()))
    assert _pks(raw_sql.semantic_search(QUERY, k=5)) == published
    after = Article.objects.semantic_search(QUERY, k=5).extra(where=[f"{table}.published"])
    assert _pks(after) == [pk for pk in _pks(Article.objects.semantic_search(QUERY, k=5)) if pk in published]


SEARCHES = {
    "semantic": lambda model: model.objects.semantic_search(QUERY, k=3),
    "hybrid": lambda model: model.objects.hybrid_search("password login", k=3),
    "similar_to": lambda model: model.objects.similar_to(model.objects.order_by("pk")[0], k=3),
    "joined-hybrid": lambda model: model.objects.filter(pk__gte=0).order_by("-pk").hybrid_search("password", k=3),
}


@pytest.mark.parametrize("name", SEARCHES)
def test_searches_pickle_evaluated_or_not(  # type: ignore[no-untyped-def]
    reports, name, django_assert_num_queries, tiny_cross_encoder_path
) -> None:
    from semsim_pg.rerank import Reranker

    reranker = Reranker(str(tiny_cross_encoder_path))
    # Django's cache pickles a queryset on set() and unpickles it on get()
    for model in (Article, Report):
        search = SEARCHES[name]
        expected = [(a.pk, a.similarity) for a in search(model)]
        assert len(expected) == 3
        unevaluated = search(model)
        with django_assert_num_queries(1):  # the search runs (as Django pickles a queryset): nothing else
            data = pickle.dumps(unevaluated)
        with django_assert_num_queries(0):
            copy = pickle.loads(data)
            assert [(a.pk, a.similarity) for a in copy] == expected
        # chained after unpickling: its Query runs again
        assert [(a.pk, a.similarity) for a in copy.filter(pk__in=[pk for pk, _ in expected])] == expected
        # a copy built on (a chained Query) runs its search again
        rebuilt = model.objects.all()
        rebuilt.query = pickle.loads(pickle.dumps(search(model).query))
        assert [(a.pk, a.similarity) for a in rebuilt] == expected
        reranked = search(model).rerank(QUERY, top_k=2, reranker=reranker)
        assert [(a.pk, a.rerank_score) for a in pickle.loads(pickle.dumps(reranked))] == [
            (a.pk, a.rerank_score) for a in reranked
        ]


LOCKS = {
    "after": lambda model: model.objects.semantic_search(QUERY, k=3).select_for_update(),
    "before": lambda model: model.objects.select_for_update().semantic_search(QUERY, k=3),
    "skip_locked": lambda model: model.objects.semantic_search(QUERY, k=3).select_for_update(skip_locked=True),
    "hybrid": lambda model: model.objects.hybrid_search("password login", k=3).select_for_update(),
    "hybrid-before": lambda model: model.objects.select_for_update(nowait=True).hybrid_search("password", k=3),
    "similar_to": lambda model: model.objects.similar_to(model.objects.order_by("pk")[0], k=3).select_for_update(),
    "joined": lambda model: model.objects.filter(pk__gte=0).select_for_update().semantic_search(QUERY, k=3),
}


@pytest.mark.django_db(transaction=True)
def test_select_for_update_locks_the_rows_found(reports) -> None:  # type: ignore[no-untyped-def]
    def free(model, pks):  # type: ignore[no-untyped-def]
        # what another connection can lock now (SKIP LOCKED leaves out rows this one holds)
        def lock() -> list[int]:
            with transaction.atomic():
                return sorted(
                    model.objects.filter(pk__in=pks).select_for_update(skip_locked=True).values_list("pk", flat=True)
                )

        return in_thread(lock)

    for model in (Article, Report):
        companion = companion_of(model)
        for name, search in LOCKS.items():
            with transaction.atomic():
                found = [a.pk for a in search(model)]
                assert len(found) == 3, name
                everything = sorted(model.objects.values_list("pk", flat=True))
                assert free(model, everything) == sorted(set(everything) - set(found)), name
                # the vectors stay free: the drain of the stale-row queue never waits on a search
                vectors = list(companion.objects.filter(source_id__in=found).values_list("pk", flat=True))
                assert free(companion, vectors) == sorted(vectors), name
