"""Retrieval evaluation through the store: a tiny self-made BEIR set, the real MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semsim_pg.errors import CollectionNotFound, InputFileError, InvalidInput
from semsim_pg.evaluation.retrieval import evaluate_retrieval, format_report, read_qrels

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats sleep up to sixteen hours a day and love warm places."},
    {"_id": "d2", "title": "Dogs", "text": "Dogs need a walk every day and enjoy playing fetch."},
    {"_id": "d3", "title": "Volcanoes", "text": "Lava flows from an erupting volcano and cools into rock."},
    {"_id": "d4", "title": "Bread", "text": "Bread dough rises because yeast produces carbon dioxide."},
    {"_id": "d5", "title": "Tides", "text": "The moon's gravity pulls the oceans and causes the tides."},
    {"_id": "d6", "title": "", "text": "Bees make honey from the nectar of flowers."},
    {"_id": "d7", "title": "Chess", "text": "In chess the bishop moves diagonally across the board."},
    {"_id": "d8", "title": "Rain", "text": "Rain forms when water vapour condenses into droplets in clouds."},
    {"_id": "d9", "title": "Kittens", "text": "Young cats, called kittens, open their eyes after about a week."},
    {"_id": "d10", "title": "Trains", "text": "High-speed trains run on dedicated tracks at 300 km/h."},
]
QUERIES = [
    {"_id": "q1", "text": "How long do cats sleep?"},
    {"_id": "q2", "text": "Why does bread dough rise?"},
    {"_id": "q3", "text": "What causes ocean tides?"},
    {"_id": "q4", "text": "How do bees produce honey?"},
    {"_id": "q5", "text": "an unjudged query"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\nq2\td4\t1\nq3\td5\t1\nq4\td6\t1\nq4\td3\t0\n"


def write_beir(root: Path, corpus: list[dict[str, str]] = CORPUS, qrels: str = QRELS) -> tuple[Path, Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (root / "qrels.tsv").write_text(qrels)
    return root / "corpus.jsonl", root / "queries.jsonl", root / "qrels.tsv"


@pytest.mark.slow
def test_evaluates_through_the_store_and_reuses_the_collection(store, collection_name, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corpus, queries, qrels = write_beir(tmp_path)
    report = evaluate_retrieval(
        store, corpus=corpus, queries=queries, qrels=qrels, collection=collection_name, progress=False
    )
    assert report.documents == 10 and report.queries == 4  # q5 has no judgment
    assert report.ingest["encoded"] == 10 and report.ingest["inserted"] == 10
    (stage,) = report.stages
    m = stage.metrics
    # Each single-answer query finds its document first; q1's two cat documents are both in the top 10.
    assert m["mrr@10"] == 1.0 and m["recall@10"] == 1.0 and m["recall@100"] == 1.0
    # recall@1: q1 has two relevant documents, so at most 1/2 there
    assert m["recall@1"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert 0.9 < m["ndcg@10"] <= 1.0
    assert stage.mean_ms > 0 and "hnsw" in stage.name
    assert store.count(collection_name) == 10
    assert store.get(collection_name, "d1").text.startswith("Cats Cats sleep")  # the title goes first

    again = evaluate_retrieval(
        store, corpus=corpus, queries=queries, qrels=qrels, collection=collection_name, exact=True, progress=False
    )
    assert again.ingest["encoded"] == 0 and again.ingest["unchanged"] == 10
    assert again.stages[0].metrics == m and "exact" in again.stages[0].name
    text = format_report(again)
    assert "ndcg@10" in text and "0 encoded, 10 unchanged" in text

    # a smaller version of the corpus: documents no longer in it leave the collection
    corpus2, _, _ = write_beir(tmp_path / "v2", corpus=CORPUS[:9])
    third = evaluate_retrieval(
        store, corpus=corpus2, queries=queries, qrels=qrels, collection=collection_name, progress=False
    )
    assert third.ingest["removed"] == 1 and third.ingest["encoded"] == 0
    assert store.count(collection_name) == 9


@pytest.mark.slow
def test_rerank_reports_both_stages(store, collection_name, tmp_path: Path, tiny_cross_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    corpus, queries, qrels = write_beir(tmp_path)
    report = evaluate_retrieval(
        store,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        collection=collection_name,
        rerank=str(tiny_cross_encoder_path),
        candidates=5,
        limit_queries=3,
        progress=False,
    )
    assert report.queries == 3 and [s.name for s in report.stages][1] == "+ rerank top 5"
    first, second = report.stages
    # the tiny reranker only reorders the 5 candidates: what lies beyond keeps its place
    assert second.metrics["recall@100"] == first.metrics["recall@100"] == 1.0
    assert second.mean_ms >= first.mean_ms
    assert report.reranker


@pytest.mark.parametrize(
    ("corpus_lines", "qrels", "message"),
    [
        (None, QRELS + "q2\tnot-a-doc\t1\n", r"qrels\.tsv, line 8: corpus-id 'not-a-doc' is not in the corpus"),
        (None, QRELS + "q9\td1\t1\n", r"line 8: query-id 'q9' is not in the queries file"),
        (None, QRELS + "q2\td1\thigh\n", r"line 8: the score 'high' is not a number"),
        (None, QRELS + "q2\td1\n", r"line 8: expected 3 tab-separated fields"),
        (None, "qid doc score\nq1\td1\t1\n", r"line 1: expected the header"),
        (None, "query-id\tcorpus-id\tscore\nq1\td1\t0\n", "no relevance judgment with a score above 0"),
        (['{"_id": "d1", "title": "x"}'], QRELS, r"corpus\.jsonl, line 1: the \"text\" field is missing"),
        (['{"title": "x", "text": "y"}'], QRELS, r"corpus\.jsonl, line 1: the \"_id\" field is missing"),
        (
            [
                '{"_id": "d1", "text": "y"',
            ],
            QRELS,
            r"corpus\.jsonl, line 1: not valid JSON",
        ),
        (['{"_id": "d1", "text": "a"}', '{"_id": "d1", "text": "b"}'], QRELS, r"line 2: id 'd1' appears again"),
    ],
)
def test_bad_files_are_refused_before_anything_is_written(  # type: ignore[no-untyped-def]
    store, collection_name, tmp_path: Path, corpus_lines: list[str] | None, qrels: str, message: str
) -> None:
    corpus, queries, qrels_path = write_beir(tmp_path, qrels=qrels)
    if corpus_lines is not None:
        corpus.write_text("\n".join(corpus_lines) + "\n")
    with pytest.raises(InputFileError, match=message):
        evaluate_retrieval(store, corpus=corpus, queries=queries, qrels=qrels_path, collection=collection_name)
    with pytest.raises(CollectionNotFound):
        store.get_collection(collection_name)


def test_read_qrels_grades_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n\nq1\td1\t2\nq1\td2\t0\n\nq2\td1\t1\n")
    assert read_qrels(path) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}
    with pytest.raises(InputFileError, match="no such file"):
        read_qrels(tmp_path / "missing.tsv")


def test_bad_options(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corpus, queries, qrels = write_beir(tmp_path)
    with pytest.raises(InvalidInput, match="--candidates must be a whole number from 1"):
        evaluate_retrieval(store, corpus=corpus, queries=queries, qrels=qrels, candidates=0)
    with pytest.raises(InvalidInput, match="--limit-queries must be at least 1"):
        evaluate_retrieval(store, corpus=corpus, queries=queries, qrels=qrels, limit_queries=0)


def test_cli_eval_retrieval(store, collection_name, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli.main import main

    corpus, queries, qrels = write_beir(tmp_path)
    argv = [
        "-q",
        "eval",
        "retrieval",
        "--corpus",
        str(corpus),
        "--queries",
        str(queries),
        "--qrels",
        str(qrels),
        "-c",
        collection_name,
    ]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 4 and report["stages"][0]["metrics"]["mrr@10"] == 1.0
    assert main([*argv, "--exact"]) == 0
    out = capsys.readouterr().out
    assert "exact scan" in out and "recall@100" in out
    qrels.write_text(QRELS + "q1\tnope\t1\n")
    assert main(argv) == 1
    assert "corpus-id 'nope' is not in the corpus" in capsys.readouterr().err


# a collection of other documents is never the evaluation's ----------------------------------------
def _plain(store, name: str, docs: list[tuple[str, str]]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from semsim_pg.store import Document

    store.create_collection(name)
    store.upsert(name, [Document(i, text) for i, text in docs])
    return {i: store.get(name, i).text for i, _ in docs}


@pytest.mark.parametrize(
    "docs",
    [
        [("line-1", "The museum opens at nine."), ("line-2", "Tickets are half price on Sundays.")],
        # ids the corpus also has, other texts: the upsert would have overwritten them
        [("d1", "Our own text about something else."), ("d2", "Another document of ours.")],
    ],
)
def test_never_loads_a_corpus_into_a_collection_of_other_documents(  # type: ignore[no-untyped-def]
    store, collection_name, tmp_path: Path, capsys, docs: list[tuple[str, str]]
) -> None:
    from semsim_pg.cli.main import main
    from semsim_pg.errors import WrongCollection

    before = _plain(store, collection_name, docs)
    corpus, queries, qrels = write_beir(tmp_path)
    with pytest.raises(WrongCollection, match=f"semsim collections --drop {collection_name}"):
        evaluate_retrieval(store, corpus=corpus, queries=queries, qrels=qrels, collection=collection_name)
    argv = ["-q", "eval", "retrieval", "--corpus", str(corpus), "--queries", str(queries), "--qrels", str(qrels)]
    assert main([*argv, "-c", collection_name]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # one line (the model's loading bar may come before it)
    assert "not this evaluation's" in last and "another -c name" in last and "Traceback" not in err
    assert store.count(collection_name) == len(docs)
    assert {i: store.get(collection_name, i).text for i, _ in docs} == before


@pytest.mark.slow
def test_a_collection_holding_this_corpus_unmarked_is_reused(store, collection_name, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # As an evaluation before the corpus marker left it: the corpus's own documents, nothing else.
    from semsim_pg.evaluation.retrieval import read_corpus

    corpus, queries, qrels = write_beir(tmp_path)
    store.create_collection(collection_name)
    store.upsert(collection_name, list(read_corpus(corpus)))
    report = evaluate_retrieval(store, corpus=corpus, queries=queries, qrels=qrels, collection=collection_name)
    assert report.ingest["encoded"] == 0 and report.ingest["updated"] == 10  # marked, nothing re-encoded
    corpus2, _, _ = write_beir(tmp_path / "v2", corpus=CORPUS[:9])
    third = evaluate_retrieval(store, corpus=corpus2, queries=queries, qrels=qrels, collection=collection_name)
    assert third.ingest["removed"] == 1 and store.count(collection_name) == 9
