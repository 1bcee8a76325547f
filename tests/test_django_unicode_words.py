"""Django hybrid search finds a word in either Unicode spelling: a row stored as NFD ("cafe" + a
combining accent) by the NFC query a keyboard types, and the reverse, whether the words are
computed (Article, its GIN index still serving them), stored (Paper) or split into passages (Report)."""

from __future__ import annotations

import pytest

from django_semsim.words import query_words_text, spellings
from tests.djangoapp.models import Article, Paper, Report
from tests.test_unicode_words import LONG, SPLIT_QUERY, nfc, nfd

pytestmark = pytest.mark.django_db

ROWS = [
    ("Station", nfd("Our café by the station serves espresso from seven.")),
    ("Meeting", nfc("Naïve questions are welcome at the Zürich meeting.")),
    ("Trains", "Trains leave from platform four every hour."),
]
QUERIES = [(nfc("café"), "Station"), (nfd("naïve Zürich"), "Meeting")]


@pytest.fixture()
def rows(django_capture_on_commit_callbacks, encoder):  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        for title, body in ROWS:
            Article.objects.create(title=title, body=body)
            Paper.objects.create(title=title, abstract=body)


@pytest.mark.parametrize("model", [Article, Paper])
@pytest.mark.parametrize(("query", "found"), QUERIES)
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.0, 1.0)])  # hybrid, and the lexical side alone
def test_either_spelling_finds_the_other(rows, model, query, found, weights) -> None:  # type: ignore[no-untyped-def]
    hits = list(model.objects.hybrid_search(query, k=3, weights=weights))
    by_words = [(r.title, r.lexical_rank) for r in hits if r.lexical_rank is not None]
    assert by_words == [(found, 1)], [(r.title, r.lexical_rank) for r in hits]
    assert next(r for r in hits if r.title == found).lexical_score > 0


def test_the_site_s_gin_index_still_serves_the_words_and_the_text_stays_as_written(rows) -> None:  # type: ignore[no-untyped-def]
    """The rows' words are still the expression of the site's own index (nothing for it to migrate),
    and only the query is spelled twice: the stored text is the bytes written."""
    from django.db import connection

    query = Article.objects.hybrid_search(nfc("café"), weights=(0.0, 1.0))
    assert [r.title for r in query if r.lexical_rank is not None] == ["Station"]
    assert dict(Article.objects.values_list("title", "body")) == dict(ROWS)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        assert "Bitmap Index Scan on article_words" in "\n".join(row[0] for row in cursor.fetchall())


def test_a_split_object_shows_the_passage_holding_the_other_spelling(  # type: ignore[no-untyped-def]
    django_capture_on_commit_callbacks, encoder
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        report = Report.objects.create(title="Town news", body=LONG)
        for title, body in ROWS:
            Report.objects.create(title=title, body=body)
    nearest = next(r for r in Report.objects.semantic_search(SPLIT_QUERY, k=4) if r.pk == report.pk)
    assert "brûlée" not in nfc(nearest.passage_text)  # the premise: by meaning, the council passage
    hit = next(r for r in Report.objects.hybrid_search(SPLIT_QUERY, k=4) if r.pk == report.pk)
    assert hit.lexical_rank == 1 and "brûlée" in nfc(hit.passage_text), hit.passage_text
    assert hit.passage_text == hit.semantic_text()[hit.passage_start : hit.passage_end]


def test_query_words_text_spells_accented_words_both_ways() -> None:
    from django.db import connection

    assert spellings(nfd("café au lait"), "UTF8") == nfc("café au lait") + "\n" + nfd("café au lait")
    assert spellings("plain words", "UTF8") == "plain words"
    # a database in another encoding cannot take a combining accent: the composed spelling alone
    assert spellings(nfd("café"), "LATIN1") == nfc("café")
    assert query_words_text(nfc("café"), connection) == nfc("café") + "\n" + nfd("café")
    assert query_words_text("password", connection) == "password"
