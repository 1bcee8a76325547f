"""Saves a user's own project makes: through a proxy or a multi-table child, a save retried after a
rollback, an app's own dumpdata loaded into an empty database, immediate mode inside a TestCase."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import models, transaction
from django.test import override_settings
from django.test.utils import isolate_apps

from django_semsim import sync
from django_semsim.checks import check_semantic_models
from django_semsim.models import EmbeddingModel, companion_of, semantic_owner
from tests.djangoapp.models import Article, FeaturedArticle, Recipe
from tests.djangoapp.testing import vectors_match_text


def test_a_proxy_and_a_multi_table_child_keep_their_vectors_with_their_parent() -> None:
    assert semantic_owner(Article) is Article
    assert semantic_owner(FeaturedArticle) is Article
    assert semantic_owner(Recipe) is Article


@pytest.mark.django_db(transaction=True)
def test_saves_through_a_proxy_or_a_child_are_encoded_and_found() -> None:
    cage = FeaturedArticle.objects.create(title="Bird cage", body="A roomy cage for parrots and canaries.")
    tacos = Recipe.objects.create(title="Street tacos", body="Corn tortillas, grilled meat, lime.", cuisine="mexican")
    assert vectors_match_text(Article) == {cage.pk: True, tacos.pk: True}

    cage.body = "A tank for tropical fish."  # an edit through the proxy re-encodes the row
    cage.save()
    tacos.title = "Fish tacos"
    tacos.save()
    assert vectors_match_text(Article) == {cage.pk: True, tacos.pk: True}
    assert list(Article.objects.semantic_search("aquarium", k=1).values_list("pk", flat=True)) == [cage.pk]
    assert list(Recipe.objects.semantic_search("mexican food", k=1).values_list("pk", flat=True)) == [tacos.pk]


@pytest.mark.django_db(transaction=True)
def test_reindex_takes_a_proxy_or_a_child_label_for_its_parent() -> None:
    FeaturedArticle.objects.bulk_create([FeaturedArticle(title="Written in bulk", body="no save(), so stale")])
    assert set(vectors_match_text(Article).values()) == {False}
    out = StringIO()
    call_command("semsim_reindex", "djangoapp.FeaturedArticle", "--stale", stdout=out)
    assert set(vectors_match_text(Article).values()) == {True}
    call_command("semsim_reindex", "djangoapp.Recipe", "--stale", stdout=out)  # accepted, nothing left to do


@pytest.mark.django_db(transaction=True)
def test_a_save_retried_after_a_rollback_is_encoded() -> None:
    """The usual retry after a deadlock: the rolled-back save must not make the change look done."""
    note = Article.objects.create(title="A note about bicycles", body="")
    note.title = "A note about submarines"
    with pytest.raises(RuntimeError), transaction.atomic():
        note.save()
        raise RuntimeError("deadlock detected")
    assert Article.objects.get().title == "A note about bicycles"  # still stored, and its vector
    note.save()  # the retry writes the submarines: they must be encoded
    assert vectors_match_text(Article) == {note.pk: True}


@pytest.mark.django_db(transaction=True)
def test_a_text_changed_and_changed_back_in_one_transaction_then_changed_is_encoded() -> None:
    article = Article.objects.create(title="Cats", body="")
    with transaction.atomic():
        article.title = "Dogs"
        article.save()
        article.title = "Cats"
        article.save()  # back to the stored text: this is what commits, and what to compare with
    assert vectors_match_text(Article) == {article.pk: True}
    article.title = "Dogs"
    article.save()
    assert vectors_match_text(Article) == {article.pk: True}


@pytest.mark.django_db(transaction=True)
def test_refresh_from_db_makes_the_stored_text_the_one_compared_with() -> None:
    article = Article.objects.create(title="Opening hours", body="Nine to five.")
    Article.objects.filter(pk=article.pk).update(body="Ten to six.")  # stale: update() sends no signal
    article.refresh_from_db()
    article.title = "Opening hours"  # unchanged against what was just read: nothing to encode (inline mode)
    article.save()
    assert vectors_match_text(Article) == {article.pk: False}
    article.body = "Eleven to seven."
    article.save()
    assert vectors_match_text(Article) == {article.pk: True}


@pytest.mark.django_db(transaction=True)
def test_in_immediate_mode_a_save_that_changes_no_text_catches_up_a_row_made_stale_meanwhile() -> None:
    with override_settings(SEMSIM={"SYNC": "immediate"}):
        try:
            article = Article.objects.create(title="Opening hours", body="Nine to five.")
            assert sync.wait_idle(timeout=120)
            Article.objects.filter(pk=article.pk).update(body="Ten to six.")  # stale: update() sends no signal
            article.refresh_from_db()
            assert vectors_match_text(Article) == {article.pk: False}
            article.save()  # the text this instance read: only the database knows the row is stale
            assert sync.wait_idle(timeout=120)
            assert vectors_match_text(Article) == {article.pk: True}
        finally:
            assert sync.stop_background(timeout=120)


@pytest.mark.django_db(transaction=True)
def test_an_apps_own_dumpdata_loads_into_an_empty_database(tmp_path: Path) -> None:
    Article.objects.create(title="Refund policy", body="Items can be returned within 30 days.")
    Recipe.objects.create(title="Pancakes", body="Flour, milk, eggs.", cuisine="breakfast")
    fixture = tmp_path / "djangoapp.json"
    call_command("dumpdata", "djangoapp", output=str(fixture), verbosity=0)
    companion = companion_of(Article)
    companion.objects.all().delete()
    Article.objects.all().delete()
    EmbeddingModel.objects.all().delete()  # a fresh database: no encoder model row either

    call_command("loaddata", str(fixture), verbosity=0)
    assert vectors_match_text(Article) == dict.fromkeys(Article.objects.values_list("pk", flat=True), True)
    assert EmbeddingModel.objects.get().dimension == 384


@pytest.mark.django_db
def test_immediate_mode_in_a_testcase_transaction_encodes_with_captured_hooks(
    django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
) -> None:
    """A TestCase runs inside a transaction the background thread cannot see: hooks run there by
    captureOnCommitCallbacks(execute=True) encode in the test's own connection."""
    with override_settings(SEMSIM={"SYNC": "immediate"}):
        with django_capture_on_commit_callbacks(execute=True):
            article = Article.objects.create(title="Lost luggage", body="Report a missing bag at the desk.")
        assert sync.wait_idle(timeout=60)
        assert vectors_match_text(Article) == {article.pk: True}
        assert list(Article.objects.semantic_search("my suitcase is missing", k=1)) == [article]


@isolate_apps("tests.djangoapp")
def test_a_child_with_its_own_text_is_warned_that_it_is_ignored() -> None:
    class Dish(Article):
        cuisine = models.CharField(max_length=50)
        semantic_fields = ["title", "cuisine"]

        class Meta:
            app_label = "djangoapp"

    class SameText(Article):
        class Meta:
            app_label = "djangoapp"

    from django_semsim import checks as checks_module

    warnings = checks_module._check_shares_owner_text(Dish, Article)
    assert [w.id for w in warnings] == ["semsim.W006"]
    assert "Article's" in warnings[0].msg and "multi-table child" in warnings[0].msg
    assert checks_module._check_shares_owner_text(SameText, Article) == []
    assert not [m for m in check_semantic_models() if m.id == "semsim.W006"]  # the test project is clean
