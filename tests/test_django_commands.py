"""Management commands: semsim_status, semsim_reindex, and the generated migrations being current."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.djangoapp.models import Article, Note
from tests.djangoapp.testing import CORPUS, vectors_match_text

pytestmark = pytest.mark.django_db


def _status() -> dict[str, dict[str, object]]:
    out = StringIO()
    call_command("semsim_status", "--json", stdout=out)
    return {row["model"]: row for row in json.loads(out.getvalue())}


def test_status_and_reindex_stale(encoder) -> None:  # type: ignore[no-untyped-def]
    Article.objects.bulk_create([Article(title=t, body=b) for t, b, _ in CORPUS[:5]])
    Note.objects.bulk_create([Note(heading="Backups", tags="ops")])
    status = _status()
    assert status["djangoapp.Article"] == {
        "model": "djangoapp.Article",
        "encoder": "all-MiniLM-L6-v2",
        "rows": 5,
        "current": 0,
        "stale": 0,
        "missing": 5,
        "other_models": {},
    }
    out, err = StringIO(), StringIO()
    call_command("semsim_reindex", "djangoapp.Article", "--stale", "--batch-size", "2", stdout=out, stderr=err)
    assert "djangoapp.Article: 5 row(s) encoded" in out.getvalue()
    assert "5/5" in err.getvalue()  # the progress bar
    assert all(vectors_match_text(Article).values())
    assert _status()["djangoapp.Note"]["missing"] == 1  # not named, not indexed

    Article.objects.filter(pk=Article.objects.order_by("pk")[0].pk).update(title="Changed in bulk")
    article = _status()["djangoapp.Article"]
    assert (article["current"], article["stale"], article["missing"]) == (4, 1, 0)
    quiet = StringIO()
    call_command("semsim_reindex", verbosity=0, stdout=quiet)
    assert quiet.getvalue() == ""
    assert all(vectors_match_text(Article).values()) and all(vectors_match_text(Note).values())

    text = StringIO()
    call_command("semsim_status", stdout=text)
    assert "djangoapp.Article" in text.getvalue() and "missing" in text.getvalue()


def test_reindex_all_reencodes_everything(encoder, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        Article.objects.create(title="One", body="first")
        Article.objects.create(title="Two", body="second")
    before = encoder.encoded_count
    out = StringIO()
    call_command("semsim_reindex", "--all", "djangoapp.Article", stdout=out, stderr=StringIO())
    assert encoder.encoded_count - before == 2
    assert "2 row(s) encoded" in out.getvalue()
    assert all(vectors_match_text(Article).values())


def test_bad_arguments() -> None:
    with pytest.raises(CommandError, match=r"auth\.User is not a semantic model"):
        call_command("semsim_reindex", "auth.User")
    with pytest.raises(CommandError, match="No model"):
        call_command("semsim_status", "nope.Nothing")
    with pytest.raises(CommandError, match="batch-size"):
        call_command("semsim_reindex", "--batch-size", "0")
    for command in ("semsim_reindex", "semsim_status", "semsim_index_check", "semsim_warmup", "semsim_worker"):
        with pytest.raises(CommandError, match=r"unknown database alias 'nope'; settings\.DATABASES has: default"):
            call_command(command, "--database", "nope")
    for command in ("semsim_faq_export", "semsim_faq_import"):
        with pytest.raises(CommandError, match=r"unknown database alias 'nope'"):
            call_command(command, "faq.csv", "--database", "nope")


def test_companion_migrations_are_current() -> None:
    out = StringIO()
    call_command(
        "makemigrations",
        "django_semsim",
        "semsim_faq",
        "semsim_insights",
        "djangoapp",
        "--check",
        "--dry-run",
        stdout=out,
    )
    assert "No changes detected" in out.getvalue()
