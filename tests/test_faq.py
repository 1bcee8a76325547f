"""FAQ matching with the real bi-encoder on the shipped e-commerce FAQ, thresholds, files, CLI."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semsim_pg.errors import CollectionNotFound, InputFileError, InvalidInput, InvalidQuery
from semsim_pg.evaluation.faq import evaluate_faq, recommend_threshold, threshold_sweep
from semsim_pg.faq import (
    DEFAULT_RERANK_THRESHOLD,
    DEFAULT_THRESHOLD,
    FAQEntry,
    FAQMatch,
    FAQMatcher,
    FAQQuery,
    best_per_entry,
    decide,
    read_faq_file,
    read_faq_queries,
    resolve_threshold,
)

DATA = resources.files("semsim_pg.data")
FAQ_FILE = Path(str(DATA.joinpath("faq_entries.tsv")))
QUERIES_FILE = Path(str(DATA.joinpath("faq_queries.tsv")))


@pytest.fixture(scope="module")
def faq(engine, encoder) -> Iterator[FAQMatcher]:  # type: ignore[no-untyped-def]
    """The shipped FAQ loaded once for the module (read-only tests share it)."""
    from semsim_pg.store import DocumentStore

    store = DocumentStore(encoder=encoder, migrate=True)
    matcher = FAQMatcher(store, f"t_faq_{uuid.uuid4().hex[:10]}")
    matcher.load(read_faq_file(FAQ_FILE))
    yield matcher
    store.drop_collection(matcher.collection)


# quality with the real model ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("question", "faq_id"),
    [
        ("I want to send an item back", "return-how"),
        ("how much is postage", "shipping-cost"),
        ("can I pay with Apple Pay", "payment-methods"),
        ("my headphones stopped working after two months", "warranty-claim"),
        ("where is my order right now", "track-order"),
        ("how many years of guarantee do I get", "warranty-length"),
        ("I forgot my login", "reset-password"),
        ("my card got declined", "payment-declined"),
    ],
)
def test_paraphrases_find_their_entry(faq: FAQMatcher, question: str, faq_id: str) -> None:
    matches = faq.match(question, k=3)
    assert matches[0].entry.faq_id == faq_id


def test_accuracy_on_the_shipped_queries(faq: FAQMatcher) -> None:
    queries = [q for q in read_faq_queries(QUERIES_FILE) if q.faq_id is not None]
    results = faq.match_many([q.query for q in queries], k=5)
    top1 = np.mean([r[0].entry.faq_id == q.faq_id for q, r in zip(queries, results, strict=True)])
    top5 = np.mean([q.faq_id in {m.entry.faq_id for m in r} for q, r in zip(queries, results, strict=True)])
    # measured 0.90 / 1.00 with all-MiniLM-L6-v2; a broken pipeline (wrong vectors, wrong collapse) is far lower
    assert top1 >= 0.85
    assert top5 >= 0.95


def test_entry_reported_once_with_its_best_phrasing(faq: FAQMatcher, encoder) -> None:  # type: ignore[no-untyped-def]
    question = "is there a tracking number for my package"
    matches = faq.match(question, k=5)
    ids = [m.entry.faq_id for m in matches]
    assert len(ids) == len(set(ids)) == 5
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    best = matches[0]
    assert best.entry.faq_id == "track-order"
    assert best.matched_kind == "alternative"
    assert best.matched_text == "Is there a tracking number for my parcel?"
    # the reported score is the best over the entry's question and all its alternatives
    entry = best.entry
    assert entry.alternatives == ("Where is my package?", "Is there a tracking number for my parcel?")
    vectors = encoder.encode([text for _, text in entry.phrasings()])
    assert best.score == pytest.approx(float(np.max(vectors @ encoder.encode_query(question))), abs=1e-4)
    assert best.similarity == best.score and best.rerank_score is None


def test_alternative_phrasing_matches_where_the_question_does_not(store, collection_name: str) -> None:  # type: ignore[no-untyped-def]
    question = "my parcel never showed up"
    entries = [
        FAQEntry("late", "What if delivery takes longer than promised?", "Contact us."),
        FAQEntry("pay", "Which payment methods do you accept?", "Cards and PayPal."),
    ]
    matcher = FAQMatcher(store, collection_name)
    matcher.load(entries)
    without = matcher.match(question, k=1)[0]
    matcher.load([FAQEntry("late", entries[0].question, "Contact us.", alternatives=("My package did not arrive",))])
    with_alternative = matcher.match(question, k=2)
    assert with_alternative[0].entry.faq_id == "late"
    assert with_alternative[0].matched_kind == "alternative"
    assert with_alternative[0].score > without.score + 0.1


# thresholds and "no answer" ------------------------------------------------------------------------
def test_off_topic_question_gets_no_answer(faq: FAQMatcher) -> None:
    answer = faq.answer("what is the capital of France")
    assert not answer.answered and not answer
    assert answer.entry is None
    assert answer.threshold == DEFAULT_THRESHOLD
    assert answer.score is not None and answer.score < DEFAULT_THRESHOLD
    assert len(answer.matches) == 3  # what came closest is still shown
    assert "below the threshold" in answer.reason
    data = answer.to_dict()
    assert data["answered"] is False and data["entry"] is None


def test_threshold_override_per_call_and_setting(faq: FAQMatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsim_pg.settings import Settings, configure, get_settings

    question = "how do I start a return"
    answer = faq.answer(question)
    assert answer.answered and answer.entry is not None and answer.entry.faq_id == "return-how"
    assert answer.score is not None
    assert not faq.answer(question, threshold=answer.score + 0.01).answered
    assert faq.answer(question, threshold=answer.score).answered
    assert faq.answer("what is the capital of France", threshold=-1.0).answered
    # The setting, through Settings (which is where SEMSIM_FAQ_THRESHOLD is read, and only there).
    strict = answer.score + 0.01
    assert Settings.from_env({"SEMSIM_FAQ_THRESHOLD": str(strict)}).faq_threshold == strict
    saved = get_settings()
    try:
        configure(saved.replace(faq_threshold=strict, faq_rerank_threshold=None))
        assert resolve_threshold() == strict
        assert not faq.answer(question).answered
        assert faq.answer(question, threshold=answer.score).answered  # per call beats the setting
        assert resolve_threshold(reranked=True) == DEFAULT_RERANK_THRESHOLD  # the cross-encoder's has its own
        configure(saved.replace(faq_threshold=None, faq_rerank_threshold=0.25))
        assert resolve_threshold(reranked=True) == 0.25 and resolve_threshold() == DEFAULT_THRESHOLD
        # The settings in force decide: a variable set after they were read is not a second source.
        monkeypatch.setenv("SEMSIM_FAQ_THRESHOLD", str(strict))
        assert resolve_threshold() == DEFAULT_THRESHOLD and faq.answer(question).answered
    finally:
        configure(saved)


def test_matcher_default_threshold(faq: FAQMatcher) -> None:
    strict = FAQMatcher(faq.store, faq.collection, threshold=0.999)
    assert not strict.answer("how do I start a return").answered


def test_empty_collection_gives_no_answer(store, collection_name: str) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    answer = FAQMatcher(store, collection_name).answer("where is my order")
    assert not answer.answered and answer.matches == () and answer.score is None
    assert answer.reason == "no FAQ entries to match"


def test_missing_collection_and_bad_questions(store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CollectionNotFound):
        FAQMatcher(store, f"nope_{uuid.uuid4().hex[:8]}").match("where is my order")
    matcher = FAQMatcher(store, "whatever")
    with pytest.raises(InvalidQuery):
        matcher.match("   ")
    with pytest.raises(InvalidQuery):
        matcher.match("where is my order", k=0)


def test_category_filter(faq: FAQMatcher) -> None:
    matches = faq.match("how long does it take", k=5, category="payments")
    assert matches and {m.entry.category for m in matches} == {"payments"}
    both = faq.match("how long does it take", k=10, category=["payments", "warranty"])
    assert {m.entry.category for m in both} == {"payments", "warranty"}


# loading ----------------------------------------------------------------------------------------------
def test_reload_is_incremental_and_removes_stale_phrasings(store, collection_name: str) -> None:  # type: ignore[no-untyped-def]
    entries = read_faq_file(FAQ_FILE)[:4]
    matcher = FAQMatcher(store, collection_name)
    first = matcher.load(entries)
    phrasings = sum(len(e.phrasings()) for e in entries)
    assert (first.inserted, first.encoded, first.removed) == (phrasings, phrasings, 0)

    again = matcher.load(entries)
    assert (again.unchanged, again.encoded, again.removed) == (phrasings, 0, 0)

    # one alternative replaced, one answer edited: one new text to encode, one phrasing gone
    changed = list(entries)
    e0, e1 = entries[0], entries[1]
    changed[0] = FAQEntry(
        e0.faq_id, e0.question, e0.answer, e0.category, (e0.alternatives[0], "Can I send back a gift?")
    )
    changed[1] = FAQEntry(e1.faq_id, e1.question, "A new answer.", e1.category, e1.alternatives)
    third = matcher.load(changed)
    assert third.encoded == 1 and third.inserted == 1 and third.removed == 1
    assert third.updated == len(e0.phrasings()) - 1 + len(e1.phrasings())  # metadata follows the edit
    assert store.count(collection_name) == phrasings
    stored = {e.faq_id: e for e in matcher.entries()}
    assert stored[e0.faq_id].alternatives == changed[0].alternatives
    assert stored[e1.faq_id].answer == "A new answer."

    # replace: entries not given are removed
    last = matcher.load(changed[:2], replace=True)
    assert last.encoded == 0
    assert {e.faq_id for e in matcher.entries()} == {e0.faq_id, e1.faq_id}
    with pytest.raises(InvalidInput, match="not one text"):  # iterated, its characters were ids
        matcher.remove(e1.faq_id)
    with pytest.raises(InvalidQuery, match="not one text"):
        matcher.match_many("how do I reset my password")
    assert matcher.remove([e1.faq_id]) == len(e1.phrasings())
    assert [e.faq_id for e in matcher.entries()] == [e0.faq_id]


def test_entry_validation_and_duplicates(store, collection_name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="answer"):
        FAQEntry("x", "A question?", " ")
    entry = FAQEntry("x", "A question?", "An answer.", alternatives=("a question?", " ", "Other?"))
    assert [text for _, text in entry.phrasings()] == ["A question?", "Other?"]
    with pytest.raises(InvalidInput, match="appears twice"):
        FAQMatcher(store, collection_name).load([entry, entry])


# files --------------------------------------------------------------------------------------------
def test_read_faq_file_shipped() -> None:
    entries = read_faq_file(FAQ_FILE)
    assert len(entries) == 20
    assert {e.category for e in entries} >= {"returns", "shipping", "payments", "warranty", "tracking"}
    assert sum(len(e.alternatives) for e in entries) >= 20
    queries = read_faq_queries(QUERIES_FILE, known_ids=[e.faq_id for e in entries])
    assert len(queries) >= 50 and any(q.faq_id is None for q in queries)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("faq_id,question,answer\nf1,Q1?,A1\nf2,Q2?\n", r"line 3: 2 fields"),
        ('faq_id,question,answer\nf1,Q1?,A1\nf2,"Q2?,A2\n', r"line 3"),
        ("faq_id,question,answer\nf1,Q1?,A1\nf1,Q2?,A2\n", r"line 3: faq_id 'f1' appears again \(first on line 2\)"),
        ("faq_id,question,answer\nf1,Q1?,A1\n\nf2,Q2?,\n", r"line 4: the answer is empty"),
        ("id,question,answer\nf1,Q1?,A1\n", r"line 1: .*lacks faq_id"),
        ("faq_id,question,answer,colour\nf1,Q1?,A1,red\n", r"unknown column"),
        ("faq_id,question,answer,published\nf1,Q1?,A1,true\nf2,Q2?,A2,false\n", r"line 3: entry 'f2' is a draft"),
        ("faq_id,question,answer,published\nf1,Q1?,A1,maybe\n", r"line 2: published must be true or false"),
        ("faq_id,question,answer\n", r"no FAQ entries"),
        ("", r"is empty"),
    ],
)
def test_malformed_faq_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "faqs.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=message) as info:
        read_faq_file(path)
    assert str(path) in str(info.value)
    # under a display name (the Django admin's upload, saved under a name of the server's): the same
    # message, the file called by that name only
    with pytest.raises(InputFileError) as shown:
        read_faq_file(path, display_name="my faqs.csv")
    assert str(shown.value) == str(info.value).replace(str(path), "my faqs.csv")
    assert str(tmp_path) not in str(shown.value)


@pytest.mark.parametrize(
    ("data", "start", "command"),
    [
        ("faq_id,question,answer\nf1,Où ?,Là.\n".encode("latin-1"), "my faqs.csv, line 2: is not UTF-8 text", "latin1"),
        ("faq_id,question,answer\nf1,Q?,A\n".encode("utf-16"), "my faqs.csv: is UTF-16 text", "utf-16"),
        ("faq_id,question,answer\nf1,Q?,A\n".encode("utf-16-le"), "my faqs.csv: looks like UTF-16", "utf-16le"),
    ],
)
def test_an_encoding_error_names_the_display_name_in_its_fix(
    tmp_path: Path, data: bytes, start: str, command: str
) -> None:
    """The conversion command a not-UTF-8 file gets names the file as the user knows it."""
    path = tmp_path / "upload.csv"
    path.write_bytes(data)
    for read in (read_faq_file, read_faq_queries):
        with pytest.raises(InputFileError) as raised:
            read(path, display_name="my faqs.csv")
        message = str(raised.value)
        assert message.startswith(start) and str(tmp_path) not in message and "upload" not in message
        assert message.endswith(f"iconv -f {command} -t utf-8 'my faqs.csv' > 'my faqs.utf8.csv'")
    with pytest.raises(InputFileError, match=r"^my faqs\.csv: no such file"):
        read_faq_file(tmp_path / "gone.csv", display_name="my faqs.csv")


def test_faq_file_formats(tmp_path: Path) -> None:
    path = tmp_path / "faqs.csv"
    path.write_text(
        '\ufeffFAQ_ID,Question,Answer,Category,Alternatives\nf1,"Q1, really?",A1,,One?| Two? |\n', encoding="utf-8"
    )
    [entry] = read_faq_file(path)
    assert entry == FAQEntry("f1", "Q1, really?", "A1", None, ("One?", "Two?"))
    # the Django FAQ's export: its published entries load (a draft is refused: test_malformed_faq_files)
    path.write_text("faq_id,question,answer,category,alternatives,published\nf1,Q1?,A1,,,TRUE\nf2,Q2?,A2,,,\n")
    assert [e.faq_id for e in read_faq_file(path)] == ["f1", "f2"]
    with pytest.raises(InputFileError, match="extension"):
        read_faq_file(tmp_path / "faqs.json")
    with pytest.raises(InputFileError, match="no such file"):
        read_faq_file(tmp_path / "missing.tsv")
    queries = tmp_path / "q.tsv"
    queries.write_text("query\tfaq_id\nwhere?\tf1\nhello\t\nwho?\tf9\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"line 4: faq_id 'f9' is not in the FAQ file"):
        read_faq_queries(queries, known_ids=["f1"])
    assert read_faq_queries(queries)[1] == FAQQuery("hello", None, 3)


def test_write_faq_file_writes_what_read_faq_file_reads(tmp_path: Path) -> None:
    from semsim_pg.faq import write_faq_file

    entries = [
        FAQEntry("a,b", 'Say "hi"?', "Line one.\nLine two,\tthen a tab.", None, ("One?", "Two; three?")),
        FAQEntry("plain", "Q?", "A.", "cat", ()),
        # cells a spreadsheet would run as formulas: written guarded, read back as they were
        FAQEntry("-5%", "-5% off for students?", "=yes", "@deals", ("+1 more?",)),
    ]
    for name in ("faqs.tsv", "faqs.csv"):
        path = tmp_path / name
        assert write_faq_file(path, entries) == 3
        assert read_faq_file(path) == entries
        assert "'=yes" in path.read_text() and "\t=yes" not in path.read_text()
        with pytest.raises(InvalidInput, match="exists already"):
            write_faq_file(path, entries[:1])
        assert read_faq_file(path) == entries  # untouched
        write_faq_file(path, entries[:1], overwrite=True)
        assert read_faq_file(path) == entries[:1]
    # what the format cannot hold is refused, and nothing is written
    piped = [FAQEntry("pay", "Which cards?", "Visa.", alternatives=("paypal | apple pay?",))]
    with pytest.raises(InvalidInput, match=r"'pay'.*'paypal \| apple pay\?'.*\|"):
        write_faq_file(tmp_path / "piped.tsv", piped)
    with pytest.raises(InvalidInput, match="no FAQ entries"):
        write_faq_file(tmp_path / "empty.tsv", [])
    with pytest.raises(InputFileError, match="extension"):
        write_faq_file(tmp_path / "faqs.txt", entries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faqs.csv", "faqs.tsv"]


def test_phrasings_stored_without_promotion_carry_no_new_metadata(store: Any, collection_name: str) -> None:
    # documents written before promoted phrasings were marked compare unchanged: nothing is rewritten
    import sqlalchemy as sa

    FAQMatcher(store, collection_name).load([FAQEntry("x", "Q?", "A.", alternatives=("Other?",))])
    table = sa.table("documents", sa.column("metadata"), sa.column("collection_id"), schema="semsim")
    collection = store.get_collection(collection_name)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.metadata).where(table.c.collection_id == collection.id)).scalars()
        keys = [sorted(metadata) for metadata in rows]
    assert keys == [["alternatives", "answer", "category", "faq_id", "kind", "question"]] * 2


def test_cli_export_then_import_encodes_nothing(
    collection_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_cli(["-q", "faq", "import", str(FAQ_FILE), "-c", collection_name]) == 0
    capsys.readouterr()
    shipped = sorted(read_faq_file(FAQ_FILE), key=lambda e: e.faq_id)
    for name in ("out.tsv", "out.csv"):
        path = tmp_path / name
        assert _run_cli(["-q", "faq", "export", str(path), "-c", collection_name, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        phrasings = sum(len(e.phrasings()) for e in shipped)
        assert summary == {"collection": collection_name, "file": str(path), "entries": 20, "phrasings": phrasings}
        assert read_faq_file(path) == shipped
        assert _run_cli(["-q", "faq", "import", str(path), "-c", collection_name, "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert (again["encoded"], again["unchanged"], again["removed"]) == (0, phrasings, 0)
    assert _run_cli(["-q", "faq", "export", str(tmp_path / "out.xlsx"), "-c", collection_name]) == 1
    assert "name it .tsv or .csv" in capsys.readouterr().err
    assert _run_cli(["-q", "faq", "export", str(tmp_path / "x.tsv"), "-c", f"{collection_name}_none"]) == 1
    assert "No collection named" in capsys.readouterr().err
    assert _run_cli(["-q", "faq", "export", str(tmp_path / "no" / "x.tsv"), "-c", collection_name]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.tsv"]


# pure logic shared with Django ---------------------------------------------------------------------
def test_best_per_entry_keeps_each_entry_once() -> None:
    rows = [("a", 0.5), ("b", 0.9), ("a", 0.95), ("c", 0.1), ("b", 0.2), ("d", 0.9)]
    best = best_per_entry(rows, key=lambda r: r[0], score=lambda r: r[1])
    assert best == [("a", 0.95), ("b", 0.9), ("d", 0.9), ("c", 0.1)]  # ties keep input order
    assert best_per_entry(rows, key=lambda r: r[0], score=lambda r: r[1], k=2) == [("a", 0.95), ("b", 0.9)]
    assert best_per_entry([], key=lambda r: r, score=lambda r: 0.0) == []


def test_decide() -> None:
    matches = [FAQMatch("e1", 0.7, 0.7, None, "q1", "question"), FAQMatch("e2", 0.6, 0.6, None, "q2", "question")]
    yes = decide("q", matches, 0.7)
    assert yes.answered and yes.entry == "e1" and yes.score == 0.7 and yes.best is matches[0]
    no = decide("q", matches, 0.71)
    assert not no.answered and no.entry is None and no.score == 0.7
    assert not decide("q", [], 0.0).answered
    with pytest.raises(InvalidQuery):
        decide("q", matches, float("nan"))


def test_threshold_sweep_and_recommendation() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [True, True, False, True, False]
    points = threshold_sweep(scores, correct, [0.5, 0.6, 0.7, 0.8, 0.95])
    assert [(p.answered_count, p.correct_count) for p in points] == [(5, 3), (4, 3), (3, 2), (2, 2), (0, 0)]
    assert points[0].answered == 1.0 and points[0].precision == pytest.approx(0.6)
    assert points[-1].precision is None
    assert recommend_threshold(points, 0.75) == 0.6
    assert recommend_threshold(points, 1.0) == 0.8
    assert recommend_threshold(points[:1], 0.9) is None


# rerank -----------------------------------------------------------------------------------------------
def test_match_with_reranker(faq: FAQMatcher, tiny_cross_encoder_path: Path) -> None:
    from semsim_pg.rerank import get_reranker

    reranker = get_reranker(str(tiny_cross_encoder_path))
    question = "where is my parcel"
    matches = faq.match(question, k=4, rerank=str(tiny_cross_encoder_path))
    assert len({m.entry.faq_id for m in matches}) == 4
    assert all(m.rerank_score is not None and m.score == m.rerank_score for m in matches)
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    # each score is the cross-encoder's own score for the phrasing it reports
    own = reranker.score(question, [m.matched_text for m in matches])
    np.testing.assert_allclose([m.score for m in matches], own, rtol=1e-4)
    answer = faq.answer(question, rerank=reranker, threshold=0.0)
    assert answer.answered and answer.matches[0].rerank_score is not None


# evaluation and CLI -----------------------------------------------------------------------------------
def test_evaluate_faq(store) -> None:  # type: ignore[no-untyped-def]
    entries = read_faq_file(FAQ_FILE)
    queries = read_faq_queries(QUERIES_FILE)
    before = {c.name for c in store.list_collections()}
    result = evaluate_faq(store, entries, queries, target_precision=0.9)
    assert {c.name for c in store.list_collections()} == before  # the temporary collection is gone
    assert result.queries == len(queries) and result.in_scope == sum(q.faq_id is not None for q in queries)
    assert 0.85 <= result.accuracy_at_1 <= result.accuracy_at_5 <= 1.0
    assert result.accuracy_at_1 <= result.mrr_at_10 <= result.accuracy_at_5
    assert result.recommended_threshold is not None and result.recommended is not None
    assert result.recommended.precision is not None and result.recommended.precision >= 0.9
    assert result.recommended.threshold == result.recommended_threshold
    # every lower threshold on the printed grid falls short of the target
    for point in result.thresholds:
        if point.threshold < result.recommended_threshold:
            assert point.precision is None or point.precision < 0.9
    # out-of-scope queries count against precision: answering everything cannot reach 100%
    assert result.thresholds[0].answered == 1.0 and result.thresholds[0].precision is not None
    assert result.thresholds[0].precision <= result.in_scope / result.queries


def _run_cli(argv: list[str]) -> int:
    from semsim_pg.cli.main import main

    return main(argv)


def test_cli_import_and_ask(collection_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(["-q", "faq", "import", str(FAQ_FILE), "-c", collection_name, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entries"] == 20 and summary["encoded"] == summary["phrasings"]

    assert _run_cli(["-q", "faq", "ask", "I want to send an item back", "-c", collection_name, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["answered"] and answer["entry"]["faq_id"] == "return-how"

    assert _run_cli(["-q", "faq", "ask", "tell me a joke", "-c", collection_name]) == 0
    assert capsys.readouterr().out.startswith("no answer:")


def test_cli_ask_interactive(
    collection_name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    assert _run_cli(["-q", "faq", "import", str(FAQ_FILE), "-c", collection_name]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("where is my package\n\ncan I pay with PayPal\n"))
    assert _run_cli(["-q", "faq", "ask", "-i", "-c", collection_name, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["entry"]["faq_id"] for line in lines] == ["track-order", "payment-methods"]


def test_cli_malformed_import_reports_line_and_imports_nothing(
    store: Any, collection_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faqs.tsv"
    path.write_text(
        "faq_id\tquestion\tanswer\nok-1\tWhere is my order?\tTracking page.\nbad\tNo answer here\nok-2\tQ?\tA.\n",
        encoding="utf-8",
    )
    assert _run_cli(["-q", "faq", "import", str(path), "-c", collection_name]) == 1
    err = capsys.readouterr().err
    assert f"{path}, line 3" in err and "2 fields" in err
    assert collection_name not in {c.name for c in store.list_collections()}


def _eval_parser() -> argparse.ArgumentParser:
    from semsim_pg.cli.main import build_parser

    return build_parser()


def test_cli_eval_faq(tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: Any) -> None:
    faqs = tmp_path / "faqs.tsv"
    faqs.write_text(
        "faq_id\tquestion\tanswer\n"
        "ship\tHow much does shipping cost?\tFree over 50 euros.\n"
        "pay\tWhich payment methods do you accept?\tCards.\n"
        "pwd\tHow do I reset my password?\tUse the link.\n",
        encoding="utf-8",
    )
    queries = tmp_path / "queries.tsv"
    queries.write_text(
        "query\tfaq_id\nwhat are the delivery charges\tship\ncan I pay by card\tpay\nI forgot my password\tpwd\n"
        "tell me a joke\t\n",
        encoding="utf-8",
    )
    args = _eval_parser().parse_args(["-q", "eval", "faq", "--faqs", str(faqs), "--queries", str(queries), "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy_at_1"] == 1.0 and report["mrr_at_10"] == 1.0
    assert report["queries"] == 4 and report["in_scope"] == 3
    # the joke scores far below every real question: some threshold answers the 3 and only them
    assert report["recommended"]["precision"] == 1.0 and report["recommended"]["answered_count"] == 3

    bad = tmp_path / "bad.tsv"
    bad.write_text("query\tfaq_id\nwhere\tnope\n", encoding="utf-8")
    args = _eval_parser().parse_args(["eval", "faq", "--faqs", str(faqs), "--queries", str(bad)])
    with pytest.raises(InputFileError, match="line 2"):
        args.func(args)


def test_unloadable_reranker_fails_before_any_search(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsim_pg.errors import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the collection does not exist either: the model error comes first, before any database work
    matcher = FAQMatcher(store, f"nope_{uuid.uuid4().hex[:8]}")
    with pytest.raises(ModelLoadError, match="semsim finetune cross-encoder"):
        matcher.answer("where is my order", rerank="cross-encoder/not-cached-anywhere-semsim-test")


# a collection of other documents is never an FAQ's ----------------------------------------------
PLAIN = [
    ("p1", "The museum opens at nine on weekdays."),
    ("p2", "Return tickets are cheaper than two singles."),
    ("p3", "Send the form back before the end of the month."),
]


def _plain_collection(store: Any, name: str) -> dict[str, str]:
    """A collection of plain documents (as `semsim ingest` makes), with its texts by id."""
    from semsim_pg.store import Document

    store.create_collection(name)
    store.upsert(name, [Document(i, text, {"source": "handbook"}) for i, text in PLAIN])
    return {i: store.get(name, i).text for i, _ in PLAIN}


def test_loading_faq_entries_never_touches_a_collection_of_other_documents(
    store: Any, collection_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from semsim_pg.errors import NotAnFAQCollection

    before = _plain_collection(store, collection_name)
    entries = read_faq_file(FAQ_FILE)[:3]
    for replace in (True, False):  # replace removed the 3 documents; without it they were mixed with entries
        with pytest.raises(NotAnFAQCollection, match=f"semsim collections --drop {collection_name}"):
            FAQMatcher(store, collection_name).load(entries, replace=replace)
    assert _run_cli(["-q", "faq", "import", str(FAQ_FILE), "-c", collection_name, "--replace"]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # one line (the model's loading bar may come before it)
    assert f"'{collection_name}' is not an FAQ collection" in last and "--drop" in last and "Traceback" not in err
    # eval faq --collection: the same refusal, before any query is asked
    with pytest.raises(NotAnFAQCollection):
        evaluate_faq(store, entries, [FAQQuery("where is my order", None)], collection=collection_name)
    assert store.count(collection_name) == len(PLAIN)
    assert {i: store.get(collection_name, i).text for i, _ in PLAIN} == before


def test_eval_faq_reuses_its_own_collection(store: Any, collection_name: str) -> None:
    entries = read_faq_file(FAQ_FILE)[:5]
    queries = [FAQQuery("I want to send an item back", "return-how"), FAQQuery("tell me a joke", None)]
    first = evaluate_faq(store, entries, queries, collection=collection_name)
    again = evaluate_faq(store, entries[:4], queries, collection=collection_name)  # replaces its own entries
    assert (first.entries, again.entries) == (5, 4)
    assert {e.faq_id for e in FAQMatcher(store, collection_name).entries()} == {e.faq_id for e in entries[:4]}


def test_asking_a_collection_that_is_no_faq_says_so(
    store: Any, collection_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from semsim_pg.errors import NotAnFAQCollection

    _plain_collection(store, collection_name)
    question = "I want to send an item back"
    assert _run_cli(["-q", "faq", "ask", question, "-c", collection_name]) == 1  # was KeyError: 'faq_id'
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"'{collection_name}' is not an FAQ collection" in last and "semsim faq import" in last
    assert _run_cli(["-q", "faq", "list", "-c", collection_name]) == 1  # was "no FAQ entries"
    assert "is not an FAQ collection" in capsys.readouterr().err
    matcher = FAQMatcher(store, collection_name)
    for call in (
        lambda: matcher.match(question),
        lambda: matcher.answer(question),
        lambda: matcher.match_many([question, "opening hours"]),
        matcher.entries,
        lambda: matcher.remove(["p1"]),
    ):
        with pytest.raises(NotAnFAQCollection, match="semsim faq import"):
            call()
    assert store.count(collection_name) == len(PLAIN)


def test_documents_with_an_faq_id_alone_are_no_faq(store: Any, collection_name: str) -> None:
    # `semsim ingest faq.csv --text-field question` keeps faq_id in the metadata, not question or answer
    from semsim_pg.errors import NotAnFAQCollection
    from semsim_pg.store import Document

    store.create_collection(collection_name)
    store.upsert(collection_name, [Document("k1", "How do I send an item back?", {"faq_id": "returns"})])
    with pytest.raises(NotAnFAQCollection, match="has no faq_id, question, answer"):  # was KeyError: 'question'
        FAQMatcher(store, collection_name).match("I want to send an item back")
