"""The Django face of search insights: FAQ.objects.answer() logs when SEMSIM["QUERY_LOG"] is on,
and the admin's "Search insights" and "Unanswered questions" pages (permissions, figures, groups,
promotion, a second promotion refused). Log rows are written by the core's writer or straight into
the app's table through SQLAlchemy (committed: the fixture deletes them)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils.crypto import salted_hmac

from django_semsim.conf import get_config
from django_semsim.faq.models import FAQ, FAQPhrasing
from django_semsim.insights.log import log_engine, log_table
from semsim_pg import insights, queries
from semsim_pg.errors import ConfigurationError
from tests.test_django_faq_admin import ADMIN_SETTINGS, create_admin_log_table

NOW = dt.datetime.now(dt.UTC)
LABEL = "semsim_faq.FAQ"
PAYPAL = ["Can I pay with PayPal?", "Do you accept PayPal payments?", "is paypal an option at checkout"]
PASSWORD = ["How do I reset my password?", "I forgot my password, how can I change it?", "password reset not working"]


@pytest.fixture()
def log_rows(db) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """An empty log before and after, as never written (its id sequence restarted: the pages tell
    that from a pruned one): its rows are committed outside the test's transaction."""

    def clear() -> None:
        insights.flush()
        with log_engine().begin() as conn:
            conn.execute(sa.delete(log_table()))
            # not TRUNCATE ... RESTART IDENTITY: its lock would wait for the test's own transaction
            conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{log_table().name}', 'id'), 1, false)"))

    clear()
    yield
    clear()
    log_engine().dispose()  # its pooled connections would keep the test database from being dropped


@pytest.fixture()
def site(log_rows) -> Iterator[None]:  # type: ignore[no-untyped-def]
    with override_settings(**ADMIN_SETTINGS):
        create_admin_log_table()
        yield


@pytest.fixture()
def faqs(django_capture_on_commit_callbacks, encoder) -> dict[str, FAQ]:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        returns = FAQ.objects.create(question="How do I return an item?", answer="Within 30 days.")
        cards = FAQ.objects.create(question="Which credit cards do you accept?", answer="Visa, Mastercard.")
        FAQ.objects.create(question="How long does shipping take?", answer="3-5 days.")
    return {"returns": returns, "cards": cards}


def _user(name: str, *perms: str) -> Client:
    user = User.objects.create_user(name, password="pw", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label=app))
    client = Client()
    client.force_login(user)
    return client


def _rows() -> list[Any]:
    insights.flush()
    table = log_table()
    with log_engine().connect() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.id)))


def _insert(rows: list[dict[str, Any]]) -> None:
    with log_engine().begin() as conn:
        conn.execute(queries.insert_log(log_table()), rows)


def _row(
    when: dt.datetime, score: float, text: str, vector: Any = None, answered: bool | None = None
) -> dict[str, Any]:
    return {
        "created_at": when,
        "collection": LABEL,
        "kind": "faq",
        "query_text": text,
        "query_hash": insights.query_hash(text),
        "model_name": get_config().model_name,
        "embedding": vector,
        "result_ids": [],
        "result_scores": [score],
        "top_score": score,
        "answered": score >= 0.55 if answered is None else answered,
        "latency_ms": 20.0,
    }


def test_query_log_settings_are_checked() -> None:
    with override_settings(SEMSIM={"QUERY_LOG": "yes"}), pytest.raises(ConfigurationError, match="QUERY_LOG must be"):
        get_config()
    with (
        override_settings(SEMSIM={"QUERY_LOG_SAMPLE_RATE": 2}),
        pytest.raises(ConfigurationError, match="QUERY_LOG_SAMPLE_RATE must be a number between 0 and 1"),
    ):
        get_config()


def test_faq_answers_are_logged_when_turned_on(log_rows, faqs, encoder) -> None:  # type: ignore[no-untyped-def]
    FAQ.objects.answer("I want to send an item back")
    assert _rows() == []  # off by default
    with override_settings(SEMSIM={"SYNC": "inline", "QUERY_LOG": True}):
        yes = FAQ.objects.answer("I want to send an item back")
        no = FAQ.objects.answer("what is the capital of Mongolia")
    assert yes.answered and not no.answered
    rows = _rows()
    assert [(r.collection, r.kind, r.answered) for r in rows] == [(LABEL, "faq", True), (LABEL, "faq", False)]
    assert rows[0].result_ids[0] == str(faqs["returns"].pk)
    assert rows[0].top_score == pytest.approx(yes.matches[0].similarity)
    assert np.allclose(np.asarray(rows[0].embedding), encoder.encode_query("I want to send an item back"), atol=1e-5)
    with override_settings(SEMSIM={"SYNC": "inline", "QUERY_LOG": True, "QUERY_LOG_TEXT": False}):
        FAQ.objects.answer("a private question")
        with override_settings(SECRET_KEY="another site's secret key"):
            FAQ.objects.answer("a private question")
    private, elsewhere = _rows()[-2:]
    assert private.query_text is None and elsewhere.query_text is None
    # keyed by a secret derived from SECRET_KEY: not the SHA-256 of a guess, and another key gives another hash
    key = salted_hmac("django_semsim.insights.query_hash", "query log", algorithm="sha256").hexdigest().encode()
    assert private.query_hash == insights.query_hash("a private question", key=key)
    assert private.query_hash != hashlib.sha256(b"a private question").hexdigest()
    assert elsewhere.query_hash != private.query_hash


@pytest.mark.parametrize("view", ["insights", "unanswered"])
def test_pages_are_for_staff_with_the_log_permission(site, view: str) -> None:  # type: ignore[no-untyped-def]
    url = reverse(f"admin:semsim_insights_querylog_{view}")
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert _user("clerk").get(url).status_code == 403
    assert _user("reader", "semsim_insights.view_querylog").get(url).status_code == 200


def test_search_insights_page(site) -> None:  # type: ignore[no-untyped-def]
    client = _user("analyst", "semsim_insights.view_querylog")
    empty = client.get(reverse("admin:semsim_insights_querylog_insights")).content.decode()
    assert "SEMSIM[&#x27;QUERY_LOG&#x27;] = True" in empty
    _insert([_row(NOW - dt.timedelta(days=100), 0.5, "old")])
    call_command("semsim_log_prune", "--older-than", "90d", stdout=io.StringIO())
    pruned = client.get(reverse("admin:semsim_insights_querylog_insights")).content.decode()
    assert "the ones logged were pruned (manage.py semsim_log_prune)" in pruned and "QUERY_LOG" not in pruned
    rng = np.random.default_rng(3)
    rows = [_row(NOW - dt.timedelta(days=8, hours=i % 100), float(rng.normal(0.72, 0.06)), f"q{i}") for i in range(300)]
    rows += [
        _row(NOW - dt.timedelta(hours=1 + i % 100), float(rng.normal(0.45 if i % 2 else 0.72, 0.06)), f"n{i}")
        for i in range(300)
    ]
    _insert(rows)
    response = client.get(reverse("admin:semsim_insights_querylog_insights"), {"collection": LABEL, "since": "7d"})
    page = response.content.decode()
    assert response.status_code == 200 and response.context["stats"].window.queries == 300
    assert "DRIFT: PSI" in page and 'src="data:image/svg+xml;base64,' in page and 'id="histogram"' in page
    bad = client.get(reverse("admin:semsim_insights_querylog_insights"), {"collection": LABEL, "since": "soonish"})
    assert "--since takes a length of time" in bad.content.decode()


#: what staff who promote unanswered groups hold
EDITOR = (
    "semsim_insights.view_querylog",
    "semsim_faq.add_faq",
    "semsim_faq.change_faq",
    "semsim_faq.add_faqphrasing",
    "semsim_faq.view_faq",
)
#: what the phrasings inline of an entry's change page needs: the same here
PHRASER = ("semsim_insights.view_querylog", "semsim_faq.change_faq", "semsim_faq.add_faqphrasing")


def _create_entry(group: dict[str, Any], answer: str) -> dict[str, Any]:
    """The form data of "Create FAQ entry from this group", its question as prefilled."""
    create = group["create"]
    return {
        "action": "create",
        "prefix": create.prefix,
        f"{create.prefix}-group": create.initial["group"],
        f"{create.prefix}-question": create.initial["question"],
        f"{create.prefix}-answer": answer,
    }


def _add_phrasing(group: dict[str, Any], text: str) -> dict[str, Any]:
    """The form data of "Add as alternative phrasing of this entry" for the group's nearest entry."""
    match, phrasing = group["phrasings"][0]
    return {
        "action": "phrasing",
        "prefix": phrasing.prefix,
        f"{phrasing.prefix}-group": phrasing.initial["group"],
        f"{phrasing.prefix}-faq": match.entry.pk,
        f"{phrasing.prefix}-text": text,
    }


def test_unanswered_questions_page_and_promotion(site, faqs, encoder, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    vectors = dict(zip(PAYPAL + PASSWORD, encoder.encode(PAYPAL + PASSWORD), strict=True))
    rows = []
    for text, times in [*zip(PAYPAL, (3, 2, 1), strict=True), *zip(PASSWORD, (2, 1, 1), strict=True)]:
        rows += [_row(NOW - dt.timedelta(days=1, minutes=i), 0.3, text, vectors[text], False) for i in range(times)]
    _insert(rows)
    editor = _user("editor", *EDITOR)
    url = reverse("admin:semsim_insights_querylog_unanswered")
    response = editor.get(url)
    groups = response.context["groups"]
    assert [g["group"].size for g in groups] == [6, 4]
    paypal, password = groups
    assert {q.text for q in paypal["group"].questions} == set(PAYPAL)
    assert paypal["nearest"][0].entry == faqs["cards"]  # proposed: the entry about paying
    page = response.content.decode()
    assert "Create FAQ entry from this group" in page and "Add as alternative phrasing of this entry" in page

    data = _create_entry(password, "Use the 'forgot password' link.")
    with django_capture_on_commit_callbacks(execute=True):
        done = editor.post(url, data, follow=True)
    assert "Created FAQ entry" in done.content.decode()
    entry = FAQ.objects.get(answer="Use the 'forgot password' link.")
    assert entry.question == password["group"].representative.text
    assert [g["group"].size for g in editor.get(url).context["groups"]] == [6]
    again = editor.post(url, data, follow=True).content.decode()
    assert "already promoted, as FAQ entry" in again and FAQ.objects.filter(answer__startswith="Use the").count() == 1

    data = _add_phrasing(paypal, "Can I pay with PayPal?")
    with django_capture_on_commit_callbacks(execute=True):
        editor.post(url, data)
    assert [p.text for p in FAQPhrasing.objects.filter(faq=faqs["cards"])] == ["Can I pay with PayPal?"]
    assert editor.get(url).context["groups"] == []
    assert FAQ.objects.answer("do you take paypal").entry == faqs["cards"]

    reader = _user("reader", "semsim_insights.view_querylog")
    assert "Create FAQ entry from this group" not in reader.get(url).content.decode()
    assert reader.post(url, {**data, "action": "create"}).status_code == 403


def test_a_text_search_is_logged_when_it_runs(log_rows, django_capture_on_commit_callbacks, encoder) -> None:  # type: ignore[no-untyped-def]
    from tests.djangoapp.models import Article
    from tests.djangoapp.testing import CORPUS

    with django_capture_on_commit_callbacks(execute=True):
        for title, body, published in CORPUS:
            Article.objects.create(title=title, body=body, published=published)
    with override_settings(SEMSIM={"SYNC": "inline", "QUERY_LOG": True}):
        lazy = Article.objects.semantic_search("I forgot my password", k=3).filter(published=True)
        assert _rows() == []  # nothing ran yet
        found = list(lazy)
        list(lazy)  # the result cache: not run, not logged again
        Article.objects.semantic_search("I forgot my password", k=3).count()  # no rows fetched: not logged
        FAQ.objects.answer("I forgot my password")  # one row for the question, none for its searches
    rows = _rows()
    assert [(r.collection, r.kind) for r in rows] == [("djangoapp.Article", "search"), (LABEL, "faq")]
    search = rows[0]
    assert (search.query_text, search.k, search.mode) == ("I forgot my password", 3, "semantic")
    assert search.result_ids == [str(a.pk) for a in found]
    assert search.result_scores == pytest.approx([a.similarity for a in found])
    assert search.embedding is not None


def test_import_keeps_the_phrasings_promotion_added(
    site, faqs, encoder, tmp_path, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    import io

    from django.core.management import call_command

    vectors = dict(zip(PAYPAL, encoder.encode(PAYPAL), strict=True))
    _insert(
        [_row(NOW - dt.timedelta(days=1, minutes=i), 0.3, text, vectors[text], False) for i, text in enumerate(PAYPAL)]
    )
    editor = _user("editor", *PHRASER)
    url = reverse("admin:semsim_insights_querylog_unanswered")
    [paypal] = editor.get(url).context["groups"]
    assert paypal["phrasings"][0][0].entry == faqs["cards"]
    with django_capture_on_commit_callbacks(execute=True):
        editor.post(url, _add_phrasing(paypal, "Can I pay with PayPal?"))
    cards = faqs["cards"]
    # the site's FAQ file, written before the promotion (the entry without the phrasing), imported again
    path = tmp_path / "faq.csv"
    path.write_text(f'faq_id,question,answer\n{cards.faq_id},{cards.question},"{cards.answer}"\n', encoding="utf-8")

    def run(*options: str) -> str:
        out = io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("semsim_faq_import", str(path), *options, stdout=out)
        return out.getvalue()

    line = run()
    assert [p.text for p in FAQPhrasing.objects.filter(faq=cards)] == ["Can I pay with PayPal?"]
    assert FAQ.objects.answer("do you take paypal").entry == cards
    assert "kept 1 promoted phrasing not in the file: `manage.py semsim_faq_export` saves them" in line, line
    assert FAQPhrasing.objects.get(faq=cards).promoted
    assert editor.get(url).context["groups"] == []  # its questions stay resolved: the phrasing answers them
    # once a file lists it, the file decides: taken out of the file later, it goes
    listed = path.read_text(encoding="utf-8")
    path.write_text(
        "faq_id,question,answer,alternatives\n" + listed.splitlines()[1] + ",Can I pay with PayPal?\n", encoding="utf-8"
    )
    run()
    assert not FAQPhrasing.objects.get(faq=cards).promoted
    path.write_text(listed, encoding="utf-8")
    line = run()
    assert "kept" not in line and not FAQPhrasing.objects.filter(faq=cards).exists()
    path.write_text(listed, encoding="utf-8")
    # --replace: the file is the whole truth
    FAQPhrasing.objects.create(faq=cards, text="Can I pay with PayPal?", promoted=True)
    line = run("--replace")
    assert "kept" not in line and not FAQPhrasing.objects.filter(faq=cards).exists()


def test_admin_calls_the_log_logged_queries(site) -> None:  # type: ignore[no-untyped-def]
    page = _user("reader", "semsim_insights.view_querylog").get(reverse("admin:index")).content.decode()
    assert "Logged queries" in page and "querys" not in page.lower()


def _unanswered(encoder, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    vectors = dict(zip(texts, encoder.encode(texts), strict=True))
    _insert([_row(NOW - dt.timedelta(days=1, minutes=i), 0.3, t, vectors[t], False) for i, t in enumerate(texts)])


def test_promotion_is_in_the_admin_history_and_refuses_the_separator(
    site, faqs, encoder, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.admin.models import ADDITION, CHANGE, LogEntry

    _unanswered(encoder, PAYPAL + PASSWORD)
    editor = _user("editor", *EDITOR)
    url = reverse("admin:semsim_insights_querylog_unanswered")
    paypal, password = editor.get(url).context["groups"]
    refused = editor.post(url, _add_phrasing(paypal, "Can I pay with PayPal | Apple Pay?"), follow=True)
    assert "A phrasing cannot hold '|'" in html_text(refused)
    assert not FAQPhrasing.objects.exists() and not LogEntry.objects.exists()
    assert len(editor.get(url).context["groups"]) == 2  # nothing resolved

    with django_capture_on_commit_callbacks(execute=True):
        editor.post(url, _add_phrasing(paypal, "Can I pay with PayPal?"))
        editor.post(url, _create_entry(password, "Use the 'forgot password' link."))
    created = FAQ.objects.get(answer="Use the 'forgot password' link.")
    entries = {(e.object_id, e.action_flag, e.user.username): e for e in LogEntry.objects.all()}
    assert set(entries) == {(str(faqs["cards"].pk), CHANGE, "editor"), (str(created.pk), ADDITION, "editor")}
    assert entries[(str(faqs["cards"].pk), CHANGE, "editor")].get_change_message() == (
        "Added alternative phrasing “Can I pay with PayPal?”."
    )
    assert entries[(str(created.pk), ADDITION, "editor")].get_change_message() == "Added from unanswered questions."


def html_text(response: Any) -> str:
    import html

    return html.unescape(response.content.decode())


def test_nearest_entries_need_the_faq_view_permission(site, faqs, encoder) -> None:  # type: ignore[no-untyped-def]
    _unanswered(encoder, PAYPAL)
    url = reverse("admin:semsim_insights_querylog_unanswered")
    viewer = _user("viewer", "semsim_insights.view_querylog", "semsim_faq.view_faq")
    [seen] = viewer.get(url).context["groups"]
    assert seen["nearest"] and "Which credit cards do you accept?" in html_text(viewer.get(url))
    phraser = _user("phraser", "semsim_insights.view_querylog", "semsim_faq.add_faqphrasing")
    response = phraser.get(url)
    [group] = response.context["groups"]
    page = html_text(response)
    assert group["nearest"] == [] and "Nearest entries" not in page
    assert all(faq.question not in page for faq in FAQ.objects.all())
    assert "Add as alternative phrasing" not in page
    assert phraser.post(url, _add_phrasing(seen, "Can I pay with PayPal?")).status_code == 403
    assert not FAQPhrasing.objects.exists()


def test_log_prune_command(log_rows) -> None:  # type: ignore[no-untyped-def]
    """manage.py semsim_log_prune: the Django log's retention (`semsim log prune` prunes only the
    core's table), with the CLI's lengths of time, limits and messages."""
    other = dict(_row(NOW - dt.timedelta(days=200), 0.7, "other model's"), collection="shop.Product")
    _insert([_row(NOW - dt.timedelta(days=d), 0.7, f"asked {d} days ago") for d in (1, 30, 91, 100)] + [other])
    out = io.StringIO()
    call_command("semsim_log_prune", "--older-than", "90d", "-c", LABEL, stdout=out, stderr=io.StringIO())
    assert out.getvalue().startswith(f"pruned 2 logged queries of {LABEL} older than 90d (before ")
    assert sorted(r.query_text for r in _rows()) == ["asked 1 days ago", "asked 30 days ago", "other model's"]
    out = io.StringIO()
    call_command("semsim_log_prune", "--older-than", "2w", "--json", "--database", "default", stdout=out)
    data = json.loads(out.getvalue())
    assert (data["deleted"], data["collection"], data["database"]) == (2, None, "default")
    assert [r.query_text for r in _rows()] == ["asked 1 days ago"]
    for bad, message in (("soon", "--older-than takes a length of time"), ("400000d", "give at most 100000d")):
        with pytest.raises(CommandError, match=message):
            call_command("semsim_log_prune", "--older-than", bad)
    with pytest.raises(CommandError, match="unknown database alias 'nowhere'"):
        call_command("semsim_log_prune", "--older-than", "1d", "--database", "nowhere")


def test_a_phrasing_needs_the_right_to_change_the_entry(site, faqs, encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.contrib import admin

    _unanswered(encoder, PAYPAL)
    url = reverse("admin:semsim_insights_querylog_unanswered")
    # may see the entries and add phrasings, not change the entries: their change page is read-only
    viewer = _user("viewer", "semsim_insights.view_querylog", "semsim_faq.view_faq", "semsim_faq.add_faqphrasing")
    response = viewer.get(url)
    [group] = response.context["groups"]
    assert group["nearest"] and "Add as alternative phrasing" not in html_text(response)
    for entry in (group["nearest"][0].entry, faqs["returns"]):  # the proposed entry, or any other
        data = {**_add_phrasing(group, "attacker chosen phrasing"), f"{group['phrasings'][0][1].prefix}-faq": entry.pk}
        assert viewer.post(url, data).status_code == 403
    assert not FAQPhrasing.objects.exists()

    phraser = _user("phraser", *PHRASER)
    [group] = phraser.get(url).context["groups"]
    assert "Add as alternative phrasing" in html_text(phraser.get(url))
    # an entry the FAQ admin does not show this user is not theirs to change, nor to learn about
    faq_admin = type(admin.site.get_model_admin(FAQ))
    shown_by = faq_admin.get_queryset
    cards = group["nearest"][0].entry
    monkeypatch.setattr(faq_admin, "get_queryset", lambda self, request: shown_by(self, request).exclude(pk=cards.pk))
    assert cards.question not in html_text(phraser.get(url))
    hidden = phraser.post(url, _add_phrasing(group, "Can I pay with PayPal?"), follow=True)
    assert f"FAQ entry {cards.pk} no longer exists" in html_text(hidden)
    assert not FAQPhrasing.objects.exists()
    # nor one it refuses to let this user change
    monkeypatch.setattr(faq_admin, "get_queryset", shown_by)
    monkeypatch.setattr(faq_admin, "has_change_permission", lambda self, request, obj=None: obj != cards)
    assert phraser.post(url, _add_phrasing(group, "Can I pay with PayPal?")).status_code == 403
    assert not FAQPhrasing.objects.exists()
    monkeypatch.undo()
    phraser.post(url, _add_phrasing(group, "Can I pay with PayPal?"))
    assert [p.text for p in FAQPhrasing.objects.filter(faq=cards)] == ["Can I pay with PayPal?"]
