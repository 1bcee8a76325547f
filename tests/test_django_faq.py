"""FAQ.objects.match()/answer(), alternative phrasings, thresholds, QuerySet.rerank(), import/export,
near duplicates: real PostgreSQL + pgvector, the real bi-encoder, the tiny cross-encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_semsim.faq.duplicates import near_duplicates
from django_semsim.faq.io import export_csv, read_entries
from django_semsim.faq.models import FAQ, FAQPhrasing
from semsim_pg.errors import InputFileError, InvalidQuery, ModelLoadError
from semsim_pg.faq import DEFAULT_THRESHOLD
from semsim_pg.rerank import Reranker
from tests.djangoapp.models import Article
from tests.djangoapp.testing import CORPUS

pytestmark = pytest.mark.django_db

# A small e-commerce FAQ: (key, category, question, answer, alternative phrasings)
SHOP_FAQ: list[tuple[str, str, str, str, list[str]]] = [
    (
        "returns",
        "orders",
        "How do I return an item?",
        "Start a return from Your orders within 30 days; the label is free.",
        ["Can I send a product back for a refund?"],
    ),
    ("shipping", "delivery", "How long does shipping take?", "Standard delivery takes 3 to 5 working days.", []),
    (
        "payments",
        "payments",
        "Which payment methods do you accept?",
        "We accept Visa, Mastercard, PayPal and bank transfer.",
        [],
    ),
    (
        "warranty",
        "products",
        "What does the warranty cover?",
        "Every product has a two-year warranty against manufacturing defects.",
        ["My device broke after a few months, is it still guaranteed?"],
    ),
    ("tracking", "delivery", "How can I track my order?", "Use the tracking link in your shipping e-mail.", []),
    ("password", "account", "How do I reset my password?", "Click 'Forgot password' on the sign-in page.", []),
]

PARAPHRASES = [
    ("I want to send an item back", "returns"),
    ("can I get my money back for something I bought", "returns"),
    ("when will my parcel arrive", "shipping"),
    ("how many days until my package is delivered", "shipping"),
    ("can I pay with PayPal", "payments"),
    ("do you take credit cards", "payments"),
    ("my phone stopped working, is it under guarantee", "warranty"),
    ("where is my package right now", "tracking"),
    ("I forgot my login password", "password"),
]


@pytest.fixture()
def shop(django_capture_on_commit_callbacks, encoder) -> dict[str, FAQ]:  # type: ignore[no-untyped-def]
    entries = {}
    with django_capture_on_commit_callbacks(execute=True):
        for key, category, question, answer, alternatives in SHOP_FAQ:
            faq = FAQ.objects.create(external_id=key, category=category, question=question, answer=answer)
            for text in alternatives:
                FAQPhrasing.objects.create(faq=faq, text=text)
            entries[key] = faq
    return entries


def test_paraphrases_find_their_entry(shop) -> None:  # type: ignore[no-untyped-def]
    hits = 0
    for question, key in PARAPHRASES:
        matches = FAQ.objects.match(question, k=3)
        assert matches, question
        assert len({m.entry.pk for m in matches}) == len(matches)  # each entry once
        assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
        hits += matches[0].entry.external_id == key
    assert hits >= len(PARAPHRASES) - 1, f"only {hits}/{len(PARAPHRASES)} paraphrases found their entry first"


def test_match_result_fields(shop) -> None:  # type: ignore[no-untyped-def]
    best = FAQ.objects.match("I want to send an item back", k=3)[0]
    assert best.entry.external_id == "returns"
    assert best.rerank_score is None and best.score == best.similarity
    assert 0 < best.similarity <= 1
    assert best.entry.similarity == best.similarity  # also on the instance, for templates
    assert best.to_dict()["entry"]["faq_id"] == "returns"


def test_alternative_phrasing_matches_and_entry_reported_once(shop) -> None:  # type: ignore[no-untyped-def]
    question = "My device broke after a few months, is it still guaranteed?"
    matches = FAQ.objects.match(question, k=5)
    assert matches[0].entry.external_id == "warranty"
    assert matches[0].matched_kind == "alternative"
    assert matches[0].matched_text == question
    assert matches[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert [m.entry.external_id for m in matches].count("warranty") == 1


def test_alternative_phrasing_follows_edits(shop, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    question = "do you ship to Norway"
    before = FAQ.objects.match(question, k=1)[0]
    with django_capture_on_commit_callbacks(execute=True):
        FAQPhrasing.objects.create(faq=shop["payments"], text="Do you ship to Norway?")
    after = FAQ.objects.match(question, k=1)[0]
    assert after.entry.external_id == "payments"
    assert after.similarity > before.similarity


def test_only_published_entries_match(shop) -> None:  # type: ignore[no-untyped-def]
    FAQ.objects.filter(pk=shop["returns"].pk).update(published=False)
    for question in ("I want to send an item back", "Can I send a product back for a refund?"):
        assert "returns" not in {m.entry.external_id for m in FAQ.objects.match(question, k=5)}


def test_answer_threshold_and_no_answer(shop) -> None:  # type: ignore[no-untyped-def]
    answer = FAQ.objects.answer("How do I return an item?")
    assert answer.answered and bool(answer)
    assert answer.entry is not None and answer.entry.external_id == "returns"
    assert answer.threshold == DEFAULT_THRESHOLD

    off_topic = FAQ.objects.answer("what is the capital of Mongolia")
    assert not off_topic.answered and off_topic.entry is None
    assert off_topic.matches and off_topic.score is not None and off_topic.score < DEFAULT_THRESHOLD
    assert "below the threshold" in off_topic.reason

    # per-call override: an impossible threshold refuses even the exact question
    strict = FAQ.objects.answer("How do I return an item?", threshold=1.01)
    assert not strict.answered and strict.score == pytest.approx(1.0, abs=1e-4)


def test_threshold_from_settings(shop) -> None:  # type: ignore[no-untyped-def]
    question = "when will my parcel arrive"
    score = FAQ.objects.match(question, k=1)[0].score
    with override_settings(SEMSIM={"SYNC": "inline", "FAQ_THRESHOLD": score + 0.01}):
        assert not FAQ.objects.answer(question).answered
        assert FAQ.objects.answer(question, threshold=score - 0.01).answered
    with override_settings(SEMSIM={"SYNC": "inline", "FAQ_THRESHOLD": score - 0.01}):
        assert FAQ.objects.answer(question).answered


def test_empty_faq_and_bad_input(encoder) -> None:  # type: ignore[no-untyped-def]
    assert FAQ.objects.match("anything at all", k=3) == []
    answer = FAQ.objects.answer("anything at all")
    assert not answer.answered and answer.reason == "no FAQ entries to match"
    with pytest.raises(InvalidQuery):
        FAQ.objects.match("   ")
    with pytest.raises(InvalidQuery):
        FAQ.objects.match("hello", k=0)


# reranking -----------------------------------------------------------------------------------
def test_match_rerank_order_is_cross_encoder_order(shop, tiny_cross_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    reranker = Reranker(str(tiny_cross_encoder_path))
    question = "I want to send an item back"
    matches = FAQ.objects.match(question, k=4, rerank=reranker)
    assert len(matches) == 4
    for m in matches:
        assert m.rerank_score is not None and m.score == m.rerank_score
        expected = float(reranker.score(question, [m.matched_text])[0])
        assert m.rerank_score == pytest.approx(expected, abs=1e-5)
    scores = [m.rerank_score for m in matches]
    assert scores == sorted(scores, reverse=True)
    reranked = FAQ.objects.answer(question, rerank=reranker, threshold=-1e9)
    assert reranked.answered and reranked.entry == matches[0].entry


def test_rerank_with_a_missing_model_fails_clearly(shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError, match="does not exist"):
        FAQ.objects.match("return an item", rerank=str(tmp_path / "nothing-here"))


@pytest.fixture()
def articles(django_capture_on_commit_callbacks, encoder) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        for title, body, published in CORPUS:
            Article.objects.create(title=title, body=body, published=published)


def test_queryset_rerank_order_equals_cross_encoder_scores(articles, tiny_cross_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    reranker = Reranker(str(tiny_cross_encoder_path))
    query = "I forgot my password"
    candidates = list(Article.objects.semantic_search(query, k=6))
    result = Article.objects.semantic_search(query, k=6).rerank(query, top_k=3, reranker=reranker)
    assert isinstance(result, list) and len(result) == 3 and all(isinstance(a, Article) for a in result)
    expected = reranker.score(query, [a.semantic_text() for a in candidates])
    order = [candidates[i].pk for i in np.argsort(-expected, kind="stable")[:3]]
    assert [a.pk for a in result] == order
    for a in result:
        assert a.similarity is not None and a.rerank_score == pytest.approx(float(expected[a.rerank_original_rank]))


def test_queryset_rerank_candidates_below_top_k_and_empty(articles, tiny_cross_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    reranker = Reranker(str(tiny_cross_encoder_path))
    query = "feeding my cat"
    few = Article.objects.semantic_search(query, k=20).rerank(query, top_k=5, candidates=2, reranker=reranker)
    assert len(few) == 2  # candidates < top_k: fewer results, no error
    assert {a.rerank_original_rank for a in few} == {0, 1}
    before = reranker.scored_count
    assert Article.objects.none().rerank(query, reranker=reranker) == []
    assert (
        Article.objects.filter(title="no such title").semantic_search(query, k=5).rerank(query, reranker=reranker) == []
    )
    assert reranker.scored_count == before  # nothing to score: the model is not called
    with pytest.raises(InvalidQuery):
        Article.objects.semantic_search(query, k=5).rerank(query, candidates=0, reranker=reranker)


# near duplicates --------------------------------------------------------------------------------
def test_near_duplicates_finds_planted_pairs_only(shop, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        dup_return = FAQ.objects.create(question="How can I return an item?", answer="Same as returns.")
        dup_track = FAQ.objects.create(question="How do I track my order?", answer="Same as tracking.")
    pairs = near_duplicates(min_similarity=0.9)
    found = {frozenset((p.first.pk, p.second.pk)) for p in pairs}
    assert frozenset((shop["returns"].pk, dup_return.pk)) in found
    assert frozenset((shop["tracking"].pk, dup_track.pk)) in found
    assert len(found) == 2, [(p.first.question, p.second.question, p.similarity) for p in pairs]
    assert all(p.similarity >= 0.9 for p in pairs)
    assert frozenset((shop["returns"].pk, shop["password"].pk)) not in {
        frozenset((p.first.pk, p.second.pk)) for p in near_duplicates(min_similarity=0.3)
    }


def test_near_duplicates_sql_uses_lateral_and_the_hnsw_index(encoder) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_semsim.conf import get_config

    config = get_config()
    companion = FAQ.semsim_companion
    with connection.cursor() as cursor:  # 2,000 entries with random vectors, written in SQL: for the plan
        cursor.execute(
            "INSERT INTO django_semsim_embeddingmodel (name, dimension, created_at) VALUES (%s, %s, now()) "
            "ON CONFLICT DO NOTHING",
            [config.model_name, config.dimensions],
        )
        cursor.execute(
            "WITH src AS (INSERT INTO django_semsim_faq (question, answer, category, published, created_at, "
            "updated_at) SELECT 'synthetic ' || g, 'a', '', true, now(), now() FROM generate_series(1, 2000) g "
            f"RETURNING id) INSERT INTO {companion._meta.db_table} (source_id, model_name, text_hash, embedding, "
            "created_at, updated_at) SELECT id, %s, NULL, (SELECT array_agg(random() - 0.5) FROM generate_series(1, "
            "%s) WHERE id > 0)::vector, now(), now() FROM src",
            [config.model_name, config.dimensions],
        )
        cursor.execute(f"ANALYZE {companion._meta.db_table}")
    with CaptureQueriesContext(connection) as captured:
        assert near_duplicates(min_similarity=0.9) == []  # random vectors are far apart
    [sql] = [q["sql"] for q in captured.captured_queries if "LATERAL" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert f"Index Scan using {companion._meta.indexes[0].name}" in plan, plan  # the HNSW index, per entry


# import / export ---------------------------------------------------------------------------------
GOOD_CSV = (
    "faq_id,question,answer,category,alternatives\n"
    "gift,Do you sell gift cards?,Yes: from 10 to 500 euros.,payments,Can I buy a voucher?|Are gift vouchers available?\n"
    "hours,When is customer service open?,Monday to Friday 9 to 17.,,\n"
)


def test_import_command_then_export_round_trip(tmp_path: Path, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "faq.csv"
    path.write_text(GOOD_CSV, encoding="utf-8")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("semsim_faq_import", str(path), verbosity=0)
    gift = FAQ.objects.get(external_id="gift")
    assert sorted(gift.alternatives()) == ["Are gift vouchers available?", "Can I buy a voucher?"]
    assert FAQ.objects.match("is there a voucher I can give as a present", k=1)[0].entry == gift
    out = tmp_path / "out.csv"
    call_command("semsim_faq_export", str(out), verbosity=0)
    assert {e.faq_id for e in read_entries(out)} == {"gift", "hours"}
    assert export_csv().splitlines()[0] == "faq_id,question,answer,category,alternatives,published"

    # again, edited, with --replace: updates in place and removes what the file no longer holds
    path.write_text("faq_id,question,answer\ngift,Do you sell gift cards?,No longer.\n", encoding="utf-8")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("semsim_faq_import", str(path), "--replace", verbosity=0)
    assert list(FAQ.objects.values_list("external_id", "answer")) == [("gift", "No longer.")]
    assert FAQ.objects.get().alternatives() == []


def test_import_without_faq_id_keys_by_question(tmp_path: Path) -> None:
    path = tmp_path / "faq.tsv"
    path.write_text("question\tanswer\nIs there a shop in Paris?\tYes, rue de Rivoli.\n", encoding="utf-8")
    call_command("semsim_faq_import", str(path), verbosity=0)
    call_command("semsim_faq_import", str(path), verbosity=0)
    assert FAQ.objects.get().external_id is None


def _faq_state() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every entry, phrasing and vector row, with its primary key (a re-created row gets a new one)."""
    from django_semsim.models import companion_of

    entries = list(FAQ.objects.order_by("pk").values_list("pk", "external_id", "question", "answer", "category"))
    phrasings = list(FAQPhrasing.objects.order_by("pk").values_list("pk", "faq_id", "text"))
    vectors = [
        tuple(companion_of(model).objects.order_by("pk").values_list("pk", "source_id", "text_hash"))
        for model in (FAQ, FAQPhrasing)
    ]
    return entries, phrasings, vectors


def _import(path: Path, *options: str) -> str:
    import io

    out = io.StringIO()
    call_command("semsim_faq_import", str(path), *options, stdout=out)
    return out.getvalue()


def test_import_export_import_gives_back_the_same_entries(  # type: ignore[no-untyped-def]
    tmp_path: Path, django_capture_on_commit_callbacks, monkeypatch, encoder
) -> None:
    from django_semsim import sync
    from tests.test_django_passages import Spy

    source = tmp_path / "faq.csv"
    source.write_text(
        "question,answer,category,alternatives\n"
        "How do I return an item?,Within 30 days.,orders,Can I send a product back?\n"
        "How long does shipping take?,3-5 days.,delivery,\n"
        "Do you sell gift cards?,Yes.,payments,Can I buy a voucher?|Are gift vouchers available?\n"
        "When is customer service open?,Monday to Friday.,,\n",
        encoding="utf-8",
    )
    with django_capture_on_commit_callbacks(execute=True):
        _import(source)
    # an entry given an id by hand that is another entry's key: the two must stay apart in the file
    taken = FAQ.objects.get(question="How long does shipping take?").pk
    with django_capture_on_commit_callbacks(execute=True):
        FAQ.objects.create(question="Where is my parcel?", answer="Track it.", external_id=str(taken))
    before = _faq_state()
    assert len(before[0]) == 5 and len(before[1]) == 3 and all(before[2])
    spy = Spy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)

    first = tmp_path / "e1.csv"
    call_command("semsim_faq_export", str(first), verbosity=0)
    for options in ((), ("--replace",)):
        with django_capture_on_commit_callbacks(execute=True):
            report = _import(first, *options)
        assert "0 new, 0 updated, 5 unchanged, 0 removed" in report, (options, report)
        assert _faq_state() == before, options  # same entries, same keys, same vectors
        assert spy.texts == [], options  # nothing encoded again
        again = tmp_path / "again.csv"
        call_command("semsim_faq_export", str(again), verbosity=0)
        assert again.read_text(encoding="utf-8") == first.read_text(encoding="utf-8")
    # the entry with the id and the entry whose key that is: each updated, neither mistaken for the other
    first.write_text(
        first.read_text(encoding="utf-8").replace("Track it.", "Track it online.").replace("3-5 days.", "3-4 days."),
        encoding="utf-8",
    )
    assert "0 new, 2 updated, 3 unchanged" in _import(first)  # the two edited answers
    assert FAQ.objects.get(external_id=str(taken)).answer == "Track it online."
    assert FAQ.objects.get(pk=taken).answer == "3-4 days." and FAQ.objects.count() == 5


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("faq_id,question,answer\na,Q one?,A one\nb,Q two?\n", 3, "2 fields"),
        ("faq_id,question,answer\na,Q one?,A one\nb,,A two\n", 3, "question is empty"),
        ("faq_id,question,answer\na,Q one?,A one\na,Q two?,A two\n", 3, "appears again"),
        ("faq_id,question\na,Q one?\n", 1, "lacks answer"),
    ],
)
def test_malformed_import_reports_the_line_and_imports_nothing(
    tmp_path: Path, content: str, line: int, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=rf"line {line}: .*{message}"):
        call_command("semsim_faq_import", str(path), verbosity=0)
    assert FAQ.objects.count() == 0
    with pytest.raises(InputFileError):
        read_entries(path)


FORMULAS = {
    '=HYPERLINK("http://evil.example","click")': "'=HYPERLINK",
    "+1+cmd|' /C calc'!A0": "'+1+cmd",
    "-2+3": "'-2+3",
    "@SUM(A1:A2)": "'@SUM",
    "'=already quoted": "''=already quoted",
}


def test_export_neutralises_formulas_and_import_export_import_is_lossless(tmp_path: Path) -> None:
    import csv

    from django_semsim.faq.io import import_entries
    from semsim_pg.faq import FAQEntry

    cells = list(FORMULAS)
    entries = [
        FAQEntry("=1+1", cells[0], cells[1], cells[2], (cells[3], "plain one")),
        FAQEntry("plain", cells[4], "a \t=tab inside stays", "-", ()),
    ]
    import_entries(entries)
    first = tmp_path / "first.csv"
    call_command("semsim_faq_export", str(first), verbosity=0)
    rows = list(csv.reader(first.open(encoding="utf-8")))[1:]
    for row in rows:
        for cell in row:
            # what a spreadsheet runs: a cell whose first character (after tabs/CRs) starts a formula
            assert cell.lstrip("\t\r")[:1] not in ("=", "+", "-", "@"), cell
    exported = {cell for row in rows for cell in row}
    for value, guarded in FORMULAS.items():
        assert any(cell.startswith(guarded) for cell in exported), (value, exported)
    # import -> export -> import: the same entries, the same file
    first_read = read_entries(first)
    assert {(e.faq_id, e.question, e.answer, e.category, e.alternatives) for e in first_read} == {
        (e.faq_id, e.question, e.answer, e.category, e.alternatives) for e in entries
    }
    import_entries(first_read, replace=True)
    second = tmp_path / "second.csv"
    call_command("semsim_faq_export", str(second), verbosity=0)
    assert second.read_text(encoding="utf-8") == first.read_text(encoding="utf-8")
    tsv = tmp_path / "out.tsv"
    call_command("semsim_faq_export", str(tsv), verbosity=0)
    assert {e.question for e in read_entries(tsv)} == {cells[0], cells[4]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("faq_id,question,answer\na,Q one?,A \x00 NUL\n", "the answer holds a NUL character"),
        (f"faq_id,question,answer\na,{'Q' * 501},A one\n", "the question is 501 characters long; at most 500"),
        (f"faq_id,question,answer,category\na,Q?,A,{'c' * 101}\n", "the category is 101 characters long"),
        (f"faq_id,question,answer\n{'i' * 101},Q?,A\n", "the faq_id is 101 characters long"),
        (f"question,answer,alternatives\nQ?,A,ok|{'p' * 501}\n", "the alternatives is 501 characters long"),
    ],
)
def test_import_refuses_what_postgresql_cannot_store(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=rf"line 2: .*{message}"):
        call_command("semsim_faq_import", str(path), verbosity=0)
    assert FAQ.objects.count() == 0


def test_export_command_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"\.csv or \.tsv"):
        call_command("semsim_faq_export", str(tmp_path / "out.xlsx"), verbosity=0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("FAQ_THRESHOLD", "high"), ("FAQ_RERANK_THRESHOLD", float("nan")), ("CROSS_ENCODER", ""), ("FAQ_ADMIN", "yes")],
)
def test_invalid_faq_settings_are_reported(key: str, value: object) -> None:
    from django_semsim.conf import get_config
    from semsim_pg.errors import ConfigurationError

    with override_settings(SEMSIM={key: value}), pytest.raises(ConfigurationError, match=key):
        get_config()
