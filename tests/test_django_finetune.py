"""manage.py semsim_finetune / semsim_finetune_faq: a model's own labels (or the FAQ's phrasings)
to a tuned bi-encoder, with negatives from the companion table's index; real PostgreSQL, the real
configured model for the index, a tiny model trained for a few steps (plumbing, not quality)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from semsim_pg.finetune import RECORD_NAME, read_record
from tests.djangoapp.models import Article, Category
from tests.finetune_data import TOPICS

pytest.importorskip("datasets", reason="fine-tuning needs the datasets package (sentence-transformers' trainers)")

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def articles(extra: dict[str, list[str]] | None = None) -> None:
    for label, titles in {**TOPICS, **(extra or {})}.items():
        category = Category.objects.create(name=label)
        for title in titles:
            Article.objects.create(title=title, body="", category=category)
    call_command("semsim_reindex", "djangoapp.Article", stdout=StringIO(), stderr=StringIO())


def test_semsim_finetune_on_a_models_labels(encoder, tiny_bi_encoder_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    articles()
    out = tmp_path / "articles-v1"
    stdout = StringIO()
    call_command(
        "semsim_finetune",
        "djangoapp.Article",
        "--label-field",
        "category",
        "--out",
        str(out),
        "--base",
        str(tiny_bi_encoder_path),
        *("--epochs", "10", "--batch-size", "4", "--learning-rate", "5e-3", "--dev-fraction", "0.34"),
        *("--threads", "1", "--json", "--verbosity", "0"),
        stdout=stdout,
    )
    record = json.loads(stdout.getvalue())
    assert record["collection"] == "djangoapp.Article" and record["data"]["django_model"] == "djangoapp.Article"
    assert record["after"]["accuracy@1"] > record["before"]["accuracy@1"]
    assert record["data"]["labels"] == 4 and record["data"]["mining"]["hard_negatives"] > 0
    assert (out / RECORD_NAME).is_file() and read_record(out) is not None


def test_semsim_finetune_bad_input(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    articles({"lonely": []})
    Article.objects.create(title="All alone", category=Category.objects.get(name="lonely"))
    out = tmp_path / "x"
    with pytest.raises(CommandError, match="single document"):
        call_command("semsim_finetune", "djangoapp.Article", "--label-field", "category", "--out", str(out))
    with pytest.raises(CommandError, match="no field 'colour'"):
        call_command("semsim_finetune", "djangoapp.Article", "--label-field", "colour", "--out", str(out))
    with pytest.raises(CommandError, match="not a semantic model"):
        call_command("semsim_finetune", "djangoapp.Category", "--label-field", "name", "--out", str(out))
    assert not out.exists()


@pytest.mark.django_db(transaction=True)
def test_overwrite_never_replaces_the_sites_own_model(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The folder is checked in the site's database (its vectors' models), not only in the one the
    core is configured with: replaced in place, the site's searches would encode queries with
    other weights than its vectors'."""
    from django_semsim.models import EmbeddingModel

    articles()
    out = tmp_path / "site-model"
    out.mkdir()
    (out / "modules.json").write_text("[]", encoding="utf-8")
    EmbeddingModel.objects.create(name=str(out.resolve()), dimension=384)  # vectors of it in this database
    with pytest.raises(CommandError, match="semsim_reindex --all") as refused:
        call_command(
            "semsim_finetune", "djangoapp.Article", "--label-field", "category", "--out", str(out), "--overwrite"
        )
    assert str(out.resolve()) in str(refused.value)
    assert sorted(p.name for p in out.iterdir()) == ["modules.json"]


def test_semsim_finetune_faq(encoder, tiny_bi_encoder_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    models = pytest.importorskip("django_semsim.faq.models")
    for label, texts in TOPICS.items():
        entry = models.FAQ.objects.create(question=texts[0], answer=f"About {label}.")
        for text in texts[1:]:
            models.FAQPhrasing.objects.create(faq=entry, text=text)
    models.FAQ.objects.create(question="An entry with no other phrasing", answer="Still an answer.")
    out = tmp_path / "faq-v1"
    stdout = StringIO()
    call_command(
        "semsim_finetune_faq",
        *("--out", str(out), "--base", str(tiny_bi_encoder_path), "--epochs", "10", "--batch-size", "4"),
        *("--learning-rate", "5e-3", "--dev-fraction", "0.34", "--threads", "1", "--json", "--verbosity", "0"),
        stdout=stdout,
    )
    record = json.loads(stdout.getvalue())
    assert record["collection"] == "django_semsim.faq" and record["data"]["kind"] == "faq"
    assert record["after"]["accuracy@1"] > record["before"]["accuracy@1"]
    assert record["data"]["corpus"] > record["data"]["train_queries"]  # the lone entry: an answer, no anchor
