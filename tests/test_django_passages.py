"""Django passages: a model with ``semantic_chunking`` stores one vector per passage, writes them per
object on every write path, and every search returns each object once, ranked by its best passage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.db import connection, models
from django.test.utils import isolate_apps

from django_semsim import status, sync
from django_semsim.checks import check_semantic_model
from django_semsim.conf import get_config
from django_semsim.expressions import Similarity
from django_semsim.models import SemanticModel, companion_of
from semsim_pg.chunking import split_passages
from tests.djangoapp.models import Article, Report

pytestmark = pytest.mark.django_db

SIZE = Report.semantic_chunking
#: long texts: each becomes several passages of 32 tokens
LONG = {
    "Password help": (
        "This guide covers many account topics. Billing questions go to the finance team. "
        "Invoices are sent every month by email. Our office is closed on public holidays. "
        "To reset your password, click 'forgot password' on the login page and follow the emailed link. "
        "Shipping is free for orders above fifty euros."
    ),
    "Kitchen notes": (
        "Bread needs flour, water, salt and yeast. Knead the dough for ten minutes until smooth. "
        "Let it rise in a warm place for an hour. Bake it in a very hot oven for forty minutes. "
        "Cool the loaf on a rack before slicing it."
    ),
    "Garden diary": (
        "Tomatoes need full sun and rich soil. Water them deeply twice a week in summer. "
        "Pinch out the side shoots to get bigger fruit. Harvest when the fruit is red and firm."
    ),
    "Pet care": "Cats need a diet rich in animal protein and fresh water every day.",
}
#: one report that is about passwords all the way through: many passages near a password query
FLOOD = " ".join(
    f"Password tip {i}: reset your password from the login page when you forget it, then sign in again."
    for i in range(30)
)


class Spy:
    """The real encoder, counting the texts it is asked to encode (split passages included)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.texts: list[str] = []

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        self.texts.extend(texts)
        return self.real.encode(texts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture()
def spy(monkeypatch, encoder):  # type: ignore[no-untyped-def]
    spy = Spy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    return spy


@pytest.fixture()
def reports(django_capture_on_commit_callbacks, encoder):  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        objs = [Report.objects.create(title=title, body=body) for title, body in LONG.items()]
    return {r.title: r for r in objs}


def _passages(report: Report) -> list[tuple[int, int, int | None, str | None]]:
    rows = companion_of(Report).objects.filter(source=report, model_id=get_config().model_name)
    return list(rows.order_by("passage").values_list("passage", "passage_start", "passage_end", "text_hash"))


def _cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_save_splits_the_text_into_passages_each_with_its_vector(reports, encoder) -> None:  # type: ignore[no-untyped-def]
    report = reports["Password help"]
    text = report.semantic_text()
    expected = split_passages(text, encoder, SIZE)
    assert len(expected) > 2
    rows = _passages(report)
    assert [(p, s, e) for p, s, e, _ in rows] == [(p.index, p.start, p.end) for p in expected]
    assert {h for *_, h in rows} == {report.semantic_text_hash()}  # one text, one hash on every passage
    vectors = companion_of(Report).objects.filter(source=report).order_by("passage").values_list("embedding", flat=True)
    wanted = encoder.encode([p.text for p in expected])
    assert all(_cosine(v, w) > 0.999 for v, w in zip(vectors, wanted, strict=True))
    assert status.model_status(Report).current == len(LONG)  # counted per object, not per passage


def test_semantic_search_gives_one_row_per_object_ranked_by_its_best_passage(reports, encoder) -> None:  # type: ignore[no-untyped-def]
    query = "how do I reset my password"
    hits = list(Report.objects.semantic_search(query, k=3))
    assert len(hits) == 3 == len({h.pk for h in hits})
    assert hits[0].title == "Password help"
    vector = encoder.encode_query(query)
    companions = companion_of(Report).objects.filter(model_id=get_config().model_name)
    for hit in hits:
        best = max(_cosine(v, vector) for v in companions.filter(source=hit).values_list("embedding", flat=True))
        assert hit.similarity == pytest.approx(best, abs=1e-5)
        text = hit.semantic_text()
        assert hit.passage_text == text[hit.passage_start : hit.passage_end]
    assert "forgot password" in hits[0].passage_text and hits[0].passage > 0  # not the first passage: the best
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    by_expression = dict(Report.objects.annotate(sim=Similarity(query)).values_list("pk", "sim"))
    assert all(by_expression[h.pk] == pytest.approx(h.similarity, abs=1e-6) for h in hits)  # its best passage too


def test_k_distinct_objects_when_one_object_fills_the_first_read(reports, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        flood = Report.objects.create(title="Password tips", body=FLOOD)
    assert len(_passages(flood)) > 4 * 3  # more than the first read (4 passages per object wanted)
    hits = list(Report.objects.semantic_search("reset your password from the login page", k=3))
    assert len({h.pk for h in hits}) == 3
    assert hits[0].pk == flood.pk
    assert len(list(Report.objects.semantic_search("password", k=None))) == Report.objects.count()


def test_search_stays_lazy_chainable_and_one_statement(reports, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_num_queries(0):
        found = Report.objects.filter(published=True).semantic_search("bread dough", k=2, min_similarity=0.1)
        found = found.exclude(title="Garden diary").order_by("title")
    with django_assert_num_queries(1):
        rows = list(found.values("title", "similarity", "passage", "passage_text"))
    top = [h.title for h in Report.objects.filter(published=True).semantic_search("bread dough", k=2)]
    assert top[0] == "Kitchen notes" and len(top) == 2
    # later filters and orderings apply to the k objects found
    assert [r["title"] for r in rows] == sorted(t for t in top if t != "Garden diary")
    assert all(r["passage_text"] and r["similarity"] > 0.1 for r in rows)
    assert Report.objects.semantic_search("bread dough", k=2).count() == 2
    high = Report.objects.semantic_search("bread dough", k=4, min_similarity=0.99)
    assert list(high) == []  # min_similarity on the best passage


def test_hybrid_similar_and_rerank_give_one_row_per_object(
    reports, tiny_cross_encoder_path, django_assert_num_queries
) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.rerank import Reranker

    query = "reset password login"
    with django_assert_num_queries(1):
        hits = list(Report.objects.hybrid_search(query, k=4))
    assert len(hits) == 4 == len({h.pk for h in hits})
    assert hits[0].title == "Password help" and "password" in hits[0].passage_text
    assert all(h.passage_text == h.semantic_text()[h.passage_start : h.passage_end] for h in hits)
    similar = list(reports["Kitchen notes"].similar_objects(k=3))
    assert len(similar) == 3 == len({s.pk for s in similar}) and reports["Kitchen notes"] not in similar
    reranker = Reranker(str(tiny_cross_encoder_path))
    reranked = Report.objects.semantic_search(query, k=4).rerank(query, top_k=4, reranker=reranker)
    assert len({r.pk for r in reranked}) == 4
    best = {h.pk: h.passage_text for h in Report.objects.semantic_search(query, k=4)}
    scores = reranker.model.predict([(query, best[r.pk]) for r in reranked])
    assert [r.rerank_score for r in reranked] == pytest.approx([float(s) for s in scores], rel=1e-5)


def test_unchanged_text_encodes_nothing_and_a_changed_one_only_its_object(
    reports, spy, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    others = {r.pk: _passages(r) for r in reports.values() if r.title != "Password help"}
    ids = dict(companion_of(Report).objects.values_list("pk", "updated_at"))
    with django_capture_on_commit_callbacks(execute=True):
        for report in Report.objects.all():
            report.save()
    assert spy.texts == []
    assert sync.drain(Report).encoded == 0 and spy.texts == []

    report = Report.objects.get(title="Password help")
    before = len(_passages(report))
    report.body = "Reset your password from the login page."
    with django_capture_on_commit_callbacks(execute=True):
        report.save()
    assert spy.texts == [report.semantic_text()]  # one short text: one passage, encoded once
    assert len(_passages(report)) == 1 < before  # the passages beyond the new last one are gone
    assert {r.pk: _passages(r) for r in Report.objects.exclude(pk=report.pk)} == others
    untouched = companion_of(Report).objects.exclude(source=report).values_list("pk", "updated_at")
    assert all(ids[pk] == updated for pk, updated in untouched)


def test_bulk_update_and_raw_sql_are_re_split_by_the_drain(reports, spy, encoder) -> None:  # type: ignore[no-untyped-def]
    Report.objects.filter(title="Pet care").update(body=LONG["Kitchen notes"])
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Report._meta.db_table} SET body = %s WHERE title = 'Garden diary'", [FLOOD])
    assert status.model_status(Report).stale == 2
    result = sync.drain(Report)
    assert result.encoded == 2 and len(result.written) == 2
    for title in ("Pet care", "Garden diary"):
        report = Report.objects.get(title=title)
        expected = split_passages(report.semantic_text(), encoder, SIZE)
        assert [(p, s, e) for p, s, e, _ in _passages(report)] == [(p.index, p.start, p.end) for p in expected]
    assert len(spy.texts) == sum(
        len(split_passages(Report.objects.get(title=t).semantic_text(), encoder, SIZE))
        for t in ("Pet care", "Garden diary")
    )
    assert status.model_status(Report).stale == 0


def test_a_changed_split_setting_re_splits_every_object(reports, monkeypatch, encoder) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(Report, "semantic_chunking", 64)
    assert status.model_status(Report).stale == len(LONG)
    sync.drain(Report)
    report = reports["Password help"]
    expected = split_passages(report.semantic_text(), encoder, 64)
    assert [(p, s, e) for p, s, e, _ in _passages(report)] == [(p.index, p.start, p.end) for p in expected]
    monkeypatch.setattr(Report, "semantic_chunking", None)  # no split any more: one whole-text row
    sync.drain(Report)
    assert [(p, s, e) for p, s, e, _ in _passages(report)] == [(0, 0, None)]


def test_unsplit_models_search_as_before() -> None:
    sql = str(Article.objects.semantic_search([0.1] * get_config().dimensions, k=5).query)
    assert "_l1" not in sql and "DISTINCT ON" not in sql and "passage_text" not in sql
    assert "passage_text" not in str(Article.objects.hybrid_search("words", k=5).query)


def test_passages_left_from_an_earlier_split_never_repeat_an_unsplit_object(
    django_capture_on_commit_callbacks, encoder
) -> None:  # type: ignore[no-untyped-def]
    # semantic_chunking just removed: the drain has not re-encoded yet, the old passages are still stored
    with django_capture_on_commit_callbacks(execute=True):
        cats, bread, garden = (
            Article.objects.create(title=t)
            for t in ("Cats need protein", "Baking bread at home", "Growing tomatoes in summer")
        )
    companion = companion_of(Article)
    whole = companion.objects.get(source=bread, model_id=get_config().model_name, passage=0)
    near = encoder.encode(["Cats and their food"])[0]
    for passage in (1, 2):  # two passages of the bread article, both nearer the query than any whole text
        companion.objects.create(
            source=bread, model_id=whole.model_id, passage=passage, embedding=near, text_hash=whole.text_hash
        )
    hits = list(Article.objects.semantic_search("Cats and their food", k=3))
    assert sorted(h.pk for h in hits) == sorted([cats.pk, bread.pk, garden.pk])  # each once, k distinct
    assert hits[0].pk == cats.pk  # ranked by the whole text, not by the leftover passages
    hybrid = list(Article.objects.hybrid_search("Cats and their food", k=3))
    assert len({h.pk for h in hybrid}) == len(hybrid) == 3
    sims = dict(Article.objects.annotate(s=Similarity("Cats and their food")).values_list("pk", "s"))
    assert sims[bread.pk] == pytest.approx(next(h.similarity for h in hits if h.pk == bread.pk), abs=1e-6)


def _ran(plan: str, cte: str) -> bool:
    """Whether the plan's CTE ``cte`` was run (EXPLAIN ANALYZE says "never executed" otherwise)."""
    lines = plan.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.strip() == f"CTE {cte}"]
    return "never executed" not in lines[at + 1]


def test_wider_reads_run_only_when_the_first_falls_short(reports, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    plan = Report.objects.semantic_search("bread dough", k=2).explain(analyze=True)
    assert _ran(plan, "_l1") and not _ran(plan, "_l2")  # 8 passages held 2 objects: one read
    with django_capture_on_commit_callbacks(execute=True):
        Report.objects.create(title="Password tips", body=FLOOD)
    plan = Report.objects.semantic_search("reset your password from the login page", k=3).explain(analyze=True)
    assert _ran(plan, "_l2") and not _ran(plan, "_l3")  # the 12 nearest were all one object's: read 96


@pytest.mark.django_db(transaction=True)
def test_migration_keeps_the_vectors_written_before_passages_as_passage_0(spy, encoder) -> None:  # type: ignore[no-untyped-def]
    from django.db.migrations.executor import MigrationExecutor

    from django_semsim.models import EmbeddingModel

    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("djangoapp")
    executor.migrate([("djangoapp", "0003_article_article_words")])  # the companion before passages
    config = get_config()
    text = "Reset your password\nClick 'forgot password' on the login page."
    vector = "[" + ",".join(repr(float(x)) for x in encoder.encode([text])[0]) + "]"
    EmbeddingModel.objects.get_or_create(name=config.model_name, defaults={"dimension": config.dimensions})
    companion = companion_of(Article)._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Article._meta.db_table} (title, body, published, views) VALUES (%s, %s, true, 0) RETURNING id",
            text.split("\n"),
        )
        (pk,) = cursor.fetchone()
        cursor.execute(
            f"INSERT INTO {companion} (source_id, model_name, text_hash, embedding, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s::vector, now(), now())",
            [
                pk,
                config.model_name,
                Article(title=text.split("\n")[0], body=text.split("\n")[1]).semantic_text_hash(),
                vector,
            ],
        )
    executor = MigrationExecutor(connection)
    executor.migrate(latest)
    rows = companion_of(Article).objects.filter(source_id=pk)
    assert list(rows.values_list("passage", "passage_start", "passage_end")) == [(0, 0, None)]
    assert sync.drain(Article).encoded == 0 and spy.texts == []  # nothing re-encoded
    (hit,) = Article.objects.semantic_search("forgot my password", k=1)
    assert hit.pk == pk and hit.similarity > 0.5
    assert status.model_status(Article).current == 1


def test_admin_shows_how_many_passages(reports, rf) -> None:  # type: ignore[no-untyped-def]
    from django.contrib import admin
    from django.contrib.auth.models import User

    from django_semsim.admin import SemanticAdminMixin

    class ReportAdmin(SemanticAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
        list_display = ["title"]

    class ArticleAdmin(SemanticAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
        list_display = ["title"]

    request = rf.get("/")
    request.user = User(is_superuser=True, is_staff=True)
    model_admin = ReportAdmin(Report, admin.site)
    assert "vector_passages" in model_admin.get_list_display(request)
    assert "vector_passages" not in ArticleAdmin(Article, admin.site).get_list_display(request)
    counts = {r.title: model_admin.vector_passages(r) for r in model_admin.get_queryset(request)}
    assert counts == {r.title: len(_passages(r)) for r in reports.values()}
    assert counts["Password help"] > 2 and counts["Pet care"] == 1
    assert model_admin.vector_passages(Report.objects.get(title="Kitchen notes")) == counts["Kitchen notes"]
    # "Similar items" search the admin's rows, annotated with their passage counts: still one row per object
    from django_semsim.query import searchable

    kitchen = reports["Kitchen notes"]
    similar = list(searchable(model_admin.get_queryset(request)).similar_to(kitchen, k=3))
    assert [r.pk for r in similar] == [r.pk for r in kitchen.similar_objects(k=3)]
    assert len({r.pk for r in similar}) == 3 and all(r._semsim_passages >= 1 for r in similar)


@isolate_apps("tests.djangoapp")
def test_checks_report_bad_split_settings() -> None:
    def model(name: str, **options: Any) -> Any:
        attrs = {
            "__module__": __name__,
            "Meta": type("Meta", (), {"app_label": "djangoapp"}),
            "text": models.TextField(),
            "semantic_fields": ["text"],
            **options,
        }
        return type(name, (SemanticModel,), attrs)

    cases = {
        "TooSmall": ({"semantic_chunking": 8}, "below 16"),
        "TooLarge": ({"semantic_chunking": 1000}, "256 tokens the model reads"),
        "Overlapping": ({"semantic_chunking": 64, "semantic_chunk_overlap": 64}, "smaller than the chunk size"),
        "NotANumber": ({"semantic_chunking": "256"}, "whole number"),
    }
    for name, (options, needle) in cases.items():
        (error,) = check_semantic_model(model(name, **options))
        assert error.id == "semsim.E012" and needle in error.msg and f"djangoapp.{name.lower()}" in error.msg.lower()
        assert "semantic_chunking" in error.hint
    (warning,) = check_semantic_model(model("OverlapOnly", semantic_chunk_overlap=8))
    assert warning.id == "semsim.W005"
    assert check_semantic_model(model("Good", semantic_chunking=256, semantic_chunk_overlap=16)) == []


def test_admin_pages_show_the_passage_count(reports) -> None:  # type: ignore[no-untyped-def]
    from django.contrib import admin
    from django.contrib.auth.models import User
    from django.test import Client, override_settings
    from django.urls import clear_url_caches, reverse

    from django_semsim.admin import SemanticAdminMixin
    from tests.test_django_faq_admin import ADMIN_SETTINGS, create_admin_log_table

    class ReportAdmin(SemanticAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
        list_display = ["title"]

    with override_settings(**ADMIN_SETTINGS):
        create_admin_log_table()
        admin.site.register(Report, ReportAdmin)
        clear_url_caches()
        try:
            client = Client()
            client.force_login(User.objects.create_superuser("boss", password="pw"))
            report = reports["Password help"]
            count = len(_passages(report))
            page = client.get(reverse("admin:djangoapp_report_changelist")).content.decode()
            assert "column-vector_passages" in page and f'<td class="field-vector_passages">{count}</td>' in page
            page = client.get(reverse("admin:djangoapp_report_change", args=[report.pk])).content.decode()
            assert 'id="semsim-passages"' in page and f"split into {count} passages" in page
        finally:
            admin.site.unregister(Report)
            clear_url_caches()


@pytest.mark.django_db(transaction=True)
def test_the_background_queue_writes_passages(monkeypatch, encoder) -> None:  # type: ignore[no-untyped-def]
    from django.test import override_settings

    with override_settings(SEMSIM={"SYNC": "immediate", "BATCH_SIZE": 64}):
        try:
            report = Report.objects.create(title="Kitchen notes", body=LONG["Kitchen notes"])
            assert sync.wait_idle(timeout=120)
        finally:
            assert sync.stop_background(timeout=120)
    expected = split_passages(report.semantic_text(), encoder, SIZE)
    assert [(p, s, e) for p, s, e, _ in _passages(report)] == [(p.index, p.start, p.end) for p in expected]


def test_hybrid_shows_the_passage_holding_the_words_that_found_the_object(
    reports, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    """As in the core: an object found by its words shows (and a reranker reads) a passage that
    holds them, not the passage nearest in meaning; its similarity stays its nearest passage's."""
    from tests.test_passages import WORDS_LATE

    with django_capture_on_commit_callbacks(execute=True):
        with_code = Report.objects.create(title="Town news", body=WORDS_LATE)
    query = "municipal politicians debating public finances QV-4471Z"
    nearest = next(r for r in Report.objects.semantic_search(query, k=5) if r.pk == with_code.pk)
    assert "QV-4471Z" not in nearest.passage_text  # the premise: by meaning, the council passage
    hit = next(r for r in Report.objects.hybrid_search(query, k=5) if r.pk == with_code.pk)
    assert hit.lexical_rank == 1 and "QV-4471Z" in hit.passage_text, hit.passage_text
    assert hit.passage_text == hit.semantic_text()[hit.passage_start : hit.passage_end]
    assert hit.similarity == pytest.approx(nearest.similarity, abs=1e-5)
    # found by meaning only: its nearest passage, as before
    by_meaning = {r.pk: r.passage for r in Report.objects.semantic_search(query, k=5)}
    for row in Report.objects.hybrid_search(query, k=5):
        if row.lexical_rank is None:
            assert row.passage == by_meaning[row.pk]
