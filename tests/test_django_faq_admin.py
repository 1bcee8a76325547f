"""The FAQ admin with Django's test client: permissions, Try a question, import, export, duplicates,
re-encode. The suite's settings have no admin, so these tests add it (signed-cookie sessions and
cookie messages: no tables) and create the admin log table inside the test.

This module is also the URLconf of these tests (``urlpatterns`` below).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client, override_settings
from django.urls import path, reverse

from django_semsim.faq.models import FAQ, FAQPhrasing

ADMIN_SETTINGS: dict[str, Any] = {
    "INSTALLED_APPS": [
        "django.contrib.admin",
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.messages",
        "django.contrib.postgres",
        "django_semsim",
        "django_semsim.faq",
        "django_semsim.insights",  # as in the suite's settings: its admin is registered once for all
        "tests.djangoapp",
    ],
    "MIDDLEWARE": [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    "SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies",
    "MESSAGE_STORAGE": "django.contrib.messages.storage.cookie.CookieStorage",
    "TEMPLATES": [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    "ROOT_URLCONF": __name__,
    "STATIC_URL": "/static/",
}


def __getattr__(name: str) -> Any:
    # urlpatterns are built on first use, once the admin is installed (LogEntry needs its app)
    if name == "urlpatterns":
        from django.contrib import admin

        return [path("admin/", admin.site.urls)]
    raise AttributeError(name)


def create_admin_log_table() -> None:
    from django.contrib.admin.models import LogEntry

    with connection.schema_editor() as editor:
        editor.create_model(LogEntry)


def drop_admin_log_table() -> None:
    from django.contrib.admin.models import LogEntry

    with connection.schema_editor() as editor:
        editor.delete_model(LogEntry)


@pytest.fixture()
def admin_site(db) -> Iterator[None]:  # type: ignore[no-untyped-def]
    with override_settings(**ADMIN_SETTINGS):
        create_admin_log_table()  # inside the test's transaction: rolled back with it
        yield


def _user(username: str, *, staff: bool, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="semsim_faq"))
    return user


@pytest.fixture()
def editor(admin_site) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    perms = ("view_faq", "add_faq", "change_faq", "delete_faq", "add_faqphrasing")
    client.force_login(_user("editor", staff=True, perms=perms))
    return client


@pytest.fixture()
def faqs(django_capture_on_commit_callbacks, encoder) -> dict[str, FAQ]:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        returns = FAQ.objects.create(question="How do I return an item?", answer="Within 30 days.", category="orders")
        FAQPhrasing.objects.create(faq=returns, text="Can I send a product back?")
        shipping = FAQ.objects.create(question="How long does shipping take?", answer="3-5 days.", category="delivery")
        twin = FAQ.objects.create(question="How can I return an item?", answer="Thirty days.", category="orders")
    return {"returns": returns, "shipping": shipping, "twin": twin}


VIEWS = ["changelist", "add", "try", "import", "export", "duplicates"]


@pytest.mark.parametrize("view", VIEWS)
def test_anonymous_and_non_staff_are_sent_to_login(admin_site, view: str) -> None:  # type: ignore[no-untyped-def]
    url = reverse(f"admin:semsim_faq_faq_{view}")
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    client = Client()
    client.force_login(_user("customer", staff=False, perms=("view_faq", "add_faq", "change_faq")))
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("view", VIEWS)
def test_staff_without_faq_permissions_is_refused(admin_site, view: str) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(_user("clerk", staff=True))
    assert client.get(reverse(f"admin:semsim_faq_faq_{view}")).status_code == 403


def test_view_permission_alone_cannot_import(admin_site) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(_user("reader", staff=True, perms=("view_faq",)))
    assert client.get(reverse("admin:semsim_faq_faq_try")).status_code == 200
    assert 'id="faq-import-link"' not in client.get(reverse("admin:semsim_faq_faq_changelist")).content.decode()
    assert client.get(reverse("admin:semsim_faq_faq_import")).status_code == 403
    upload = SimpleUploadedFile("faq.csv", b"question,answer\nQ?,A\n")
    assert client.post(reverse("admin:semsim_faq_faq_import"), {"file": upload}).status_code == 403
    assert FAQ.objects.count() == 0


def test_import_with_replace_needs_the_delete_permission(admin_site, faqs) -> None:  # type: ignore[no-untyped-def]
    """ "replace" deletes the entries the file leaves out: not for staff who may not delete entries."""
    client = Client()
    client.force_login(_user("adder", staff=True, perms=("view_faq", "add_faq", "change_faq")))
    url = reverse("admin:semsim_faq_faq_import")
    page = client.get(url).content.decode()
    assert 'name="file"' in page and 'name="replace"' not in page
    upload = SimpleUploadedFile("one.csv", b"question,answer\nDo you sell gift cards?,Yes.\n")
    assert client.post(url, {"file": upload, "replace": "on"}).status_code == 403
    assert FAQ.objects.count() == 3  # nothing deleted, nothing added
    upload = SimpleUploadedFile("one.csv", b"question,answer\nDo you sell gift cards?,Yes.\n")
    assert client.post(url, {"file": upload}).status_code == 302  # an import that deletes nothing is theirs
    assert FAQ.objects.count() == 4


def test_changelist_search_and_filter(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    url = reverse("admin:semsim_faq_faq_changelist")
    page = editor.get(url).content.decode()
    assert "How long does shipping take?" in page and "Try a question" in page and 'id="faq-import-link"' in page
    filtered = editor.get(url, {"category": "delivery"}).content.decode()
    assert "How long does shipping take?" in filtered and "How do I return an item?" not in filtered
    keywords = editor.get(url, {"q": "send a product back", "keywords": "1"}).content.decode()  # phrasings too
    assert "How do I return an item?" in keywords and "shipping" not in keywords
    assert "Search by meaning instead" in keywords


def test_changelist_searches_by_meaning_ranked_with_the_similarity(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    url = reverse("admin:semsim_faq_faq_changelist")
    response = editor.get(url, {"q": "I'd like my money back for this parcel", "search_mode": "meaning"})
    page = response.content.decode()
    assert "Search by keywords instead" in page and "column-search_similarity" in page
    assert "Search by words + meaning instead" in page and "column-search_found_by" not in page
    listed = [faq.question for faq in response.context["cl"].result_list]
    assert set(listed[:2]) == {"How do I return an item?", "How can I return an item?"}
    similarities = [faq.similarity for faq in response.context["cl"].result_list]
    assert similarities == sorted(similarities, reverse=True)
    assert editor.get(url, {"q": "I'd like my money back", "keywords": "1"}).context["cl"].result_count == 0
    # a click on a column header still sorts by it
    by_question = editor.get(url, {"q": "money back", "o": "1"}).context["cl"].result_list
    assert [f.question for f in by_question] == sorted(f.question for f in by_question)


def test_changelist_searches_words_and_meaning_by_default(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    url = reverse("admin:semsim_faq_faq_changelist")
    response = editor.get(url, {"q": "shipping"})
    page = response.content.decode()
    assert 'data-mode="hybrid"' in page and "words and meaning together" in page
    assert "Search by meaning instead" in page and "Search by keywords instead" in page
    assert "column-search_found_by" in page and "column-search_similarity" in page
    listed = list(response.context["cl"].result_list)
    assert listed[0].question == "How long does shipping take?"
    assert (listed[0].dense_rank, listed[0].lexical_rank) == (1, 1)
    assert "meaning #1 · words #1" in page
    assert [f.score for f in listed] == sorted((f.score for f in listed), reverse=True)
    assert all(f.lexical_rank is None for f in listed[1:])  # the only entry with the word
    # the paraphrase without a shared word is still found: the dense side ranks it
    paraphrase = editor.get(url, {"q": "I'd like my money back for this parcel"}).context["cl"].result_list
    assert {f.question for f in list(paraphrase)[:2]} == {"How do I return an item?", "How can I return an item?"}
    # an unknown mode is the default one; keywords by the new parameter too
    assert 'data-mode="hybrid"' in editor.get(url, {"q": "shipping", "search_mode": "fuzzy"}).content.decode()
    assert editor.get(url, {"q": "send a product back", "search_mode": "keywords"}).context["cl"].result_count == 1


def test_vector_status_column_and_filter(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    url = reverse("admin:semsim_faq_faq_changelist")
    FAQ.objects.filter(pk=faqs["shipping"].pk).update(question="How fast is delivery?")  # stale now
    missing = FAQ.objects.bulk_create([FAQ(question="Do you ship abroad?", answer="Yes.")])[0]  # no vector
    rows = {f.pk: f for f in editor.get(url).context["cl"].result_list}
    from django_semsim.admin import SemanticAdminMixin

    status = SemanticAdminMixin.vector_status
    assert status(None, rows[faqs["returns"].pk]) == "current"  # type: ignore[arg-type]
    assert status(None, rows[faqs["shipping"].pk]) == "stale"  # type: ignore[arg-type]
    assert status(None, rows[missing.pk]) == "missing"  # type: ignore[arg-type]
    for value, expected in (("stale", {faqs["shipping"].pk}), ("missing", {missing.pk})):
        assert {f.pk for f in editor.get(url, {"vector": value}).context["cl"].result_list} == expected
    current = {f.pk for f in editor.get(url, {"vector": "current"}).context["cl"].result_list}
    assert current == {faqs["returns"].pk, faqs["twin"].pk}


def test_change_page_lists_similar_entries(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    page = editor.get(reverse("admin:semsim_faq_faq_change", args=[faqs["returns"].pk])).content.decode()
    assert 'id="semsim-similar"' in page
    similar = page.split('id="semsim-similar"')[1]
    assert similar.index("How can I return an item?") < similar.index("How long does shipping take?")


def test_similar_entries_are_among_the_rows_the_admin_shows(editor, faqs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.contrib import admin

    faq_admin = type(admin.site.get_model_admin(FAQ))
    shown_by = faq_admin.get_queryset
    page = editor.get(reverse("admin:semsim_faq_faq_change", args=[faqs["returns"].pk])).content.decode()
    assert "How long does shipping take?" in page.split('id="semsim-similar"')[1]  # listed when shown
    # a site's admin that shows each team its own category: another category's entries stay hidden
    monkeypatch.setattr(
        faq_admin, "get_queryset", lambda self, request: shown_by(self, request).filter(category="orders")
    )
    page = editor.get(reverse("admin:semsim_faq_faq_change", args=[faqs["returns"].pk])).content.decode()
    similar = page.split('id="semsim-similar"')[1]
    assert "How can I return an item?" in similar
    assert "How long does shipping take?" not in page
    assert reverse("admin:semsim_faq_faq_change", args=[faqs["shipping"].pk]) not in page


def test_add_with_inline_phrasing_encodes_both(editor, encoder, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    data = {
        "question": "Do you sell gift cards?",
        "answer": "Yes.",
        "category": "payments",
        "published": "on",
        "external_id": "",
        "phrasings-TOTAL_FORMS": "1",
        "phrasings-INITIAL_FORMS": "0",
        "phrasings-0-text": "Can I buy a voucher?",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = editor.post(reverse("admin:semsim_faq_faq_add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    faq = FAQ.objects.get(question="Do you sell gift cards?")
    assert faq.alternatives() == ["Can I buy a voucher?"]
    best = FAQ.objects.match("is there a voucher I can buy", k=1)[0]
    assert best.entry == faq and best.matched_kind == "alternative"


def test_try_a_question_shows_matches_and_verdict(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    response = editor.get(reverse("admin:semsim_faq_faq_try"), {"question": "I want to send an item back", "k": 3})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Answered by" in page
    assert page.index("How do I return an item?") < page.index("How long does shipping take?")
    # no cross-encoder is configured in the suite's settings: no rerank column, and the reason, not an error
    assert 'id="rerank-off"' in page and "no cross-encoder is configured" in page
    assert "rerank score" not in page and 'class="rerank"' not in page
    assert response.context["answer"].matches[0].similarity > 0.5

    off = editor.get(reverse("admin:semsim_faq_faq_try"), {"question": "what is the capital of Mongolia", "k": 3})
    assert "No answer" in off.content.decode()


def test_try_a_question_with_a_cross_encoder(editor, faqs, tiny_cross_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    with override_settings(SEMSIM={"SYNC": "inline", "CROSS_ENCODER": str(tiny_cross_encoder_path)}):
        response = editor.get(reverse("admin:semsim_faq_faq_try"), {"question": "send an item back", "k": 3})
    assert response.status_code == 200
    reranked = response.context["reranked"]
    assert reranked is not None and all(m.rerank_score is not None for m in reranked.matches)
    page = response.content.decode()
    assert 'id="rerank-off"' not in page and "rerank score (cross-encoder)" in page and 'class="rerank"' in page


def test_try_a_question_with_a_cross_encoder_that_cannot_load(editor, faqs, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from django_semsim.faq import admin as faq_admin

    faq_admin._reranker_failures.clear()
    missing = str(tmp_path / "no-such-model")
    with override_settings(SEMSIM={"SYNC": "inline", "CROSS_ENCODER": missing}):
        response = editor.get(reverse("admin:semsim_faq_faq_try"), {"question": "send an item back", "k": 3})
    page = response.content.decode()
    assert response.status_code == 200 and response.context["answer"].matches
    assert 'id="rerank-off"' in page and "could not be loaded" in page and 'class="rerank"' not in page
    # the loading error itself is in the log, not on the page
    assert any(missing in record.getMessage() for record in caplog.records)
    faq_admin._reranker_failures.clear()


def test_phrasing_inputs_are_wide(editor) -> None:  # type: ignore[no-untyped-def]
    page = editor.get(reverse("admin:semsim_faq_faq_add")).content.decode()
    phrasing = (
        page.split('name="phrasings-0-text"')[0].rsplit("<input", 1)[1]
        + page.split('name="phrasings-0-text"')[1].split(">", 1)[0]
    )
    assert "width: 40em" in phrasing
    question = page.split('name="question"')[0].rsplit("<", 1)[1] + page.split('name="question"')[1].split(">", 1)[0]
    assert "width: 40em" in question


def test_import_upload_and_malformed_upload(editor, encoder) -> None:  # type: ignore[no-untyped-def]
    url = reverse("admin:semsim_faq_faq_import")
    bad = SimpleUploadedFile("faq.csv", b"faq_id,question,answer\na,Q one?,A one\nb,,A two\n")
    response = editor.post(url, {"file": bad})
    assert response.status_code == 200
    assert "faq.csv, line 3: the question is empty" in response.content.decode()
    assert "Nothing was imported" in response.content.decode()
    assert "semsim-faq-" not in response.content.decode()  # the server's copy, never shown
    assert FAQ.objects.count() == 0

    good = SimpleUploadedFile(
        "faq.tsv", b"faq_id\tquestion\tanswer\talternatives\nx\tQ one?\tA one\tQ 1?|Question one\n"
    )
    response = editor.post(url, {"file": good})
    assert response.status_code == 302
    assert FAQ.objects.get().alternatives() == ["Q 1?", "Question one"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"faq_id,question,answer\na,Q one?,A \x00 one\n", "holds a NUL character"),
        (b"faq_id,question,answer\na," + b"Q" * 600 + b",A one\n", "600 characters long; at most 500"),
    ],
)
def test_import_upload_with_a_nul_or_an_overlong_field_is_a_form_error(editor, content: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    response = editor.post(reverse("admin:semsim_faq_faq_import"), {"file": SimpleUploadedFile("faq.csv", content)})
    assert response.status_code == 200
    assert message in response.content.decode() and "Nothing was imported" in response.content.decode()
    assert FAQ.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"faq_id,question,answer\na,Q?,A\na,Q again?,A\n", "Our FAQ.CSV, line 3: entry 'a' appears again"),
        (b"faq_id,question\na,Q?\n", "Our FAQ.CSV, line 1: the header (faq_id, question) lacks answer"),
        (b'question,answer\nQ?,A\n"Q2?,A2\n', "Our FAQ.CSV, line 3: malformed CSV"),
        (b"question,answer\nQ?,A,extra\n", "Our FAQ.CSV, line 2: 3 fields, but the header has 2"),
        (b"question,answer\n", "Our FAQ.CSV: holds no FAQ entries"),
        ("question,answer\nQ?,A\n".encode("utf-16"), "Our FAQ.CSV: is UTF-16 text"),
        ("question,answer\nQ?,A\n".encode("utf-16-le"), "Our FAQ.CSV: looks like UTF-16 text"),
    ],
)
def test_every_import_error_names_the_upload_never_the_server_copy(editor, content: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    """The core's readers are told the upload's name (display_name): no text replaced after the fact."""
    response = editor.post(reverse("admin:semsim_faq_faq_import"), {"file": SimpleUploadedFile("Our FAQ.CSV", content)})
    page = html.unescape(response.content.decode())
    assert response.status_code == 200 and message in page and "Nothing was imported" in page
    assert "semsim-faq-" not in page and "upload" not in page.replace("Upload", "")
    if "UTF-16" in message:
        assert "-t utf-8 'Our FAQ.CSV' > 'Our FAQ.utf8.CSV'" in page
    assert FAQ.objects.count() == 0


def test_import_upload_not_in_utf8_names_the_users_file_not_the_server_temp_folder(editor) -> None:  # type: ignore[no-untyped-def]
    latin1 = "faq_id,question,answer\na,Où est ma commande ?,Voir le suivi.\n".encode("latin-1")
    response = editor.post(reverse("admin:semsim_faq_faq_import"), {"file": SimpleUploadedFile("my faq.csv", latin1)})
    page = html.unescape(response.content.decode())
    assert "my faq.csv, line 2: is not UTF-8 text" in page
    assert "iconv -f latin1 -t utf-8 'my faq.csv' > 'my faq.utf8.csv'" in page
    assert "semsim-faq-" not in page and "upload" not in page.replace("Upload", "")
    assert FAQ.objects.count() == 0


@pytest.mark.parametrize("name", ["é" * 200 + ".csv", "Ü" * 150 + ".TSV"])
def test_import_upload_with_a_name_too_long_for_the_file_system(editor, encoder, name: str) -> None:  # type: ignore[no-untyped-def]
    # 405 bytes in UTF-8: more than a file name may hold (255), though Django keeps names of 255 characters
    separator = "\t" if name.endswith(".TSV") else ","
    content = f"question{separator}answer\nDo you sell gift cards?{separator}Yes.\n".encode()
    response = editor.post(reverse("admin:semsim_faq_faq_import"), {"file": SimpleUploadedFile(name, content)})
    assert response.status_code == 302
    assert FAQ.objects.get().answer == "Yes."
    empty = f"question{separator}answer\nQ{separator}\n".encode()
    bad = editor.post(reverse("admin:semsim_faq_faq_import"), {"file": SimpleUploadedFile(name, empty)})
    assert f"{name}, line 2: the answer is empty" in html.unescape(bad.content.decode())


def test_import_error_names_the_users_file_in_the_fix_it_suggests(editor) -> None:  # type: ignore[no-untyped-def]
    latin1 = "question,answer\nOù est ma commande ?,Voir le suivi.\n".encode("latin-1")
    name = "é" * 200 + ".csv"
    page = html.unescape(
        editor.post(reverse("admin:semsim_faq_faq_import"), {"file": SimpleUploadedFile(name, latin1)}).content.decode()
    )
    assert f"iconv -f latin1 -t utf-8 '{name}' > '{'é' * 200}.utf8.csv'" in page  # quoted: not ASCII
    assert "semsim-faq-" not in page and "upload" not in page.replace("Upload", "")


def test_export_view_neutralises_formulas(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    faqs["shipping"].answer = '=HYPERLINK("http://evil.example")'
    faqs["shipping"].save()
    text = editor.get(reverse("admin:semsim_faq_faq_export")).content.decode()
    assert ",'=HYPERLINK(" in text.replace("\"'=HYPERLINK", "'=HYPERLINK")
    assert ",=HYPERLINK" not in text and ',"=HYPERLINK' not in text


def test_export_view_and_action(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    response = editor.get(reverse("admin:semsim_faq_faq_export"))
    assert response["Content-Type"].startswith("text/csv")
    text = response.content.decode()
    assert text.splitlines()[0] == "faq_id,question,answer,category,alternatives,published"
    assert "Can I send a product back?" in text and len(text.splitlines()) == 4
    action = editor.post(
        reverse("admin:semsim_faq_faq_changelist"),
        {"action": "export_selected", "_selected_action": [faqs["shipping"].pk]},
    )
    assert action.content.decode().splitlines()[1:] == [
        f"{faqs['shipping'].pk},How long does shipping take?,3-5 days.,delivery,,true"
    ]


def test_duplicates_report(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    response = editor.get(reverse("admin:semsim_faq_faq_duplicates"), {"min_similarity": "0.9"})
    pairs = response.context["pairs"]
    assert [{p.first.pk, p.second.pk} for p in pairs] == [{faqs["returns"].pk, faqs["twin"].pk}]
    assert "How can I return an item?" in response.content.decode()


def test_duplicates_report_is_among_the_rows_the_admin_shows(editor, faqs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.contrib import admin

    faq_admin = type(admin.site.get_model_admin(FAQ))
    shown_by = faq_admin.get_queryset
    monkeypatch.setattr(
        faq_admin, "get_queryset", lambda self, request: shown_by(self, request).exclude(pk=faqs["twin"].pk)
    )
    response = editor.get(reverse("admin:semsim_faq_faq_duplicates"), {"min_similarity": "0.9"})
    assert response.context["pairs"] == []
    assert "How can I return an item?" not in response.content.decode()


def test_reencode_action(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    companion = FAQ.semsim_companion
    FAQ.objects.filter(pk=faqs["returns"].pk).update(question="How do I send an item back?")  # stale now
    response = editor.post(
        reverse("admin:semsim_faq_faq_changelist"),
        {"action": "reencode_vectors", "_selected_action": [faqs["returns"].pk]},
        follow=True,
    )
    assert "2 vector(s) re-encoded for 1 FAQ(s)" in response.content.decode()
    row = companion.objects.get(source=faqs["returns"].pk)
    from semsim_pg.encoder import text_hash

    assert row.text_hash == text_hash("How do I send an item back?")


# sorting a search by its own columns ------------------------------------------------------------
def _column_values(response: Any, name: str) -> list[Any]:
    assert response.status_code == 200, response.content.decode()[:2000]
    return [getattr(row, name) for row in response.context["cl"].result_list]


def _assert_sorts_by_search_columns(client: Client, url: str, query: str, similarity: int, found_by: int) -> None:
    """A click on the "similarity" or "found by" header (``o=N``, ``o=-N`` on the second click) sorts
    the search's hits by it, in both ranked modes, and lists the same hits as the unsorted search."""
    for mode, columns in (
        ("hybrid", {similarity: "similarity", found_by: "score"}),
        ("meaning", {similarity: "similarity"}),
    ):
        hits = {row.pk for row in client.get(url, {"q": query, "search_mode": mode}).context["cl"].result_list}
        assert len(hits) > 2
        for index, name in columns.items():
            for sign, descending in (("", False), ("-", True)):
                response = client.get(url, {"q": query, "search_mode": mode, "o": f"{sign}{index}"})
                values = _column_values(response, name)
                known = [v for v in values if v is not None]  # a row without a vector has no similarity: last
                assert values == sorted(known, reverse=descending) + [None] * (len(values) - len(known)), values
                assert len(set(known)) > 1  # an order that can be wrong
                assert {row.pk for row in response.context["cl"].result_list} == hits
                # the header shows the order and toggles it, as for any sortable column
                assert response.context["cl"].get_ordering_field_columns() == {index: "desc" if descending else "asc"}
                assert f"o={'' if descending else '-'}{index}" in response.content.decode()
    # without a search the columns are not there, and a stale o= in the URL is no error
    for order in (str(similarity), f"-{found_by}"):
        assert client.get(url, {"o": order}).status_code == 200
        assert client.get(url, {"q": query, "search_mode": "keywords", "o": order}).status_code == 200


def test_faq_changelist_sorts_a_search_by_similarity_and_found_by(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    FAQ.objects.create(question="Can I get a refund?", answer="Yes.")  # a word match without a vector yet
    # columns: 0 the checkbox, 1 question, 2 similarity, 3 found by
    _assert_sorts_by_search_columns(editor, reverse("admin:semsim_faq_faq_changelist"), "refund", 2, 3)


def test_model_admin_sorts_a_search_by_similarity_and_found_by(
    admin_site, encoder, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    from django.contrib import admin
    from django.urls import clear_url_caches

    from django_semsim.admin import SemanticAdminMixin
    from tests.djangoapp.models import Article
    from tests.djangoapp.testing import CORPUS

    class ArticleAdmin(SemanticAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
        search_fields = ["title"]

    with django_capture_on_commit_callbacks(execute=True):
        for title, body, published in CORPUS:
            Article.objects.create(title=title, body=body, published=published)
    admin.site.register(Article, ArticleAdmin)
    clear_url_caches()
    try:
        client = Client()
        client.force_login(User.objects.create_superuser("boss", password="pw"))
        # columns: 0 the checkbox, 1 the object, 2 similarity, 3 found by
        _assert_sorts_by_search_columns(client, reverse("admin:djangoapp_article_changelist"), "stem cells", 2, 3)
    finally:
        admin.site.unregister(Article)
        clear_url_caches()


def _inline(faq: FAQ, *texts: str) -> dict[str, Any]:
    """The change form of ``faq`` as posted, with ``texts`` as new phrasings in the inline."""
    data: dict[str, Any] = {
        "question": faq.question,
        "answer": faq.answer,
        "category": faq.category,
        "published": "on",
        "external_id": faq.external_id or "",
        "phrasings-TOTAL_FORMS": str(len(texts)),
        "phrasings-INITIAL_FORMS": "0",
    }
    data.update({f"phrasings-{i}-text": text for i, text in enumerate(texts)})
    return data


def test_a_phrasing_holding_the_separator_is_refused_in_the_inline(editor, faqs) -> None:  # type: ignore[no-untyped-def]
    shipping = faqs["shipping"]
    url = reverse("admin:semsim_faq_faq_change", args=[shipping.pk])
    response = editor.post(url, _inline(shipping, "Do you deliver to UK | Ireland?"))
    assert response.status_code == 200  # the form again, with the error
    assert "A phrasing cannot hold &#x27;|&#x27;" in response.content.decode()
    assert shipping.alternatives() == []
    assert editor.post(url, _inline(shipping, "Do you deliver to the UK or Ireland?")).status_code == 302
    assert shipping.alternatives() == ["Do you deliver to the UK or Ireland?"]


def test_export_refuses_an_entry_whose_phrasing_would_split(editor, faqs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import CommandError, call_command

    FAQPhrasing.objects.create(faq=faqs["shipping"], text="Do you deliver to UK | Ireland?")  # by code: no clean()
    response = editor.get(reverse("admin:semsim_faq_faq_export"), follow=True)
    page = html.unescape(response.content.decode())
    assert not response["Content-Type"].startswith("text/csv")
    assert (
        f"Nothing was exported: FAQ '{faqs['shipping'].faq_id}': the alternative 'Do you deliver to UK | Ireland?'"
        in page
    )
    action = editor.post(
        reverse("admin:semsim_faq_faq_changelist"),
        {"action": "export_selected", "_selected_action": [faqs["shipping"].pk]},
    )
    assert action.status_code == 302
    out = tmp_path / "faq.csv"
    with pytest.raises(CommandError, match=r"holds '\|'"):
        call_command("semsim_faq_export", str(out), verbosity=0)
    assert not out.exists()


def test_export_then_import_keeps_drafts_drafts(editor, faqs, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    shipping = faqs["shipping"]
    shipping.published = False
    shipping.save()
    text = editor.get(reverse("admin:semsim_faq_faq_export")).content.decode()
    shipping.delete()
    upload = SimpleUploadedFile("backup.csv", text.encode())
    with django_capture_on_commit_callbacks(execute=True):
        assert editor.post(reverse("admin:semsim_faq_faq_import"), {"file": upload, "replace": "on"}).status_code == 302
    restored = FAQ.objects.get(question="How long does shipping take?")
    assert restored.published is False
    assert FAQ.objects.get(pk=faqs["returns"].pk).published is True
    assert all(m.entry != restored for m in FAQ.objects.match("how long is delivery", k=3))
    # a file without the column: new entries published, existing ones keep theirs
    upload = SimpleUploadedFile(
        "old.csv", f"faq_id,question,answer\n{restored.faq_id},{restored.question},New.\nz,Q?,A.\n".encode()
    )
    assert editor.post(reverse("admin:semsim_faq_faq_import"), {"file": upload}).status_code == 302
    assert FAQ.objects.get(pk=restored.pk).published is False and FAQ.objects.get(external_id="z").published
    upload = SimpleUploadedFile("bad.csv", b"question,answer,published\nQ?,A.,maybe\n")
    page = html.unescape(editor.post(reverse("admin:semsim_faq_faq_import"), {"file": upload}).content.decode())
    assert "bad.csv, line 2: published must be true or false" in page


def test_import_is_in_the_admin_history(editor, faqs, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

    returns, shipping = faqs["returns"], faqs["shipping"]
    content = (
        "faq_id,question,answer,category,alternatives\n"
        f"{returns.faq_id},{returns.question},Within 60 days.,orders,Can I send a product back?|May I return it?\n"
        f"{shipping.faq_id},{shipping.question},{shipping.answer},delivery,\n"
        "new,Do you sell gift cards?,Yes.,,Can I buy a voucher?\n"
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = editor.post(
            reverse("admin:semsim_faq_faq_import"),
            {"file": SimpleUploadedFile("faq.csv", content.encode()), "replace": "on"},
        )
    assert response.status_code == 302
    new = FAQ.objects.get(external_id="new")
    logged = {
        (e.object_id, e.action_flag, e.change_message, e.user.username)
        for e in LogEntry.objects.filter(content_type__model="faq")
    }
    assert logged == {  # shipping is as stored: nothing happened to it, nothing logged
        (str(new.pk), ADDITION, "Added by importing faq.csv, with 1 alternative phrasing(s) added.", "editor"),
        (str(returns.pk), CHANGE, "Changed by importing faq.csv: answer; 1 alternative phrasing(s) added.", "editor"),
        (
            str(faqs["twin"].pk),
            DELETION,
            "Deleted by importing faq.csv with replace (the file does not list it).",
            "editor",
        ),
    }
    history = editor.get(reverse("admin:semsim_faq_faq_history", args=[returns.pk])).content.decode()
    assert "Changed by importing faq.csv: answer" in history and "editor" in history
