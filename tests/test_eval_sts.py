"""STS evaluation end to end on self-made pairs, with the real model; pair-file parsing and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semsim_pg.cli.main import main
from semsim_pg.errors import InputFileError
from semsim_pg.evaluation.files import read_pairs, read_sts_pairs
from semsim_pg.evaluation.metrics import pearson, spearman
from semsim_pg.evaluation.sts import evaluate_sts

# (sentence1, sentence2, score 0-5): paraphrases, related, same topic, unrelated.
PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", 5.0),
    ("A woman is slicing an onion.", "A woman cuts an onion into slices.", 4.8),
    ("The cat sleeps on the sofa.", "A cat is asleep on the couch.", 4.8),
    ("Two children are running in a park.", "Two kids run through the park.", 4.6),
    ("The train was late this morning.", "This morning the train arrived late.", 4.8),
    ("He bought a new car yesterday.", "Yesterday he purchased a new automobile.", 4.8),
    ("A dog is catching a frisbee.", "A dog catches a flying disc.", 4.4),
    ("The stock market fell sharply today.", "Shares dropped steeply on the exchange today.", 4.2),
    ("A man is playing a guitar.", "A man is playing a piano.", 2.6),
    ("A woman is slicing an onion.", "A woman is slicing a tomato.", 2.8),
    ("The cat sleeps on the sofa.", "The dog sleeps on the sofa.", 2.4),
    ("Two children are running in a park.", "Two children are sitting in a park.", 2.2),
    ("The train was late this morning.", "The bus was late this morning.", 2.8),
    ("He bought a new car yesterday.", "He sold his old car yesterday.", 2.0),
    ("A dog is catching a frisbee.", "A dog is sleeping in the grass.", 1.4),
    ("The stock market fell sharply today.", "The stock market rose slightly today.", 2.2),
    ("A man is playing a guitar.", "A band is performing on stage.", 1.6),
    ("A woman is slicing an onion.", "Someone is cooking dinner in a kitchen.", 1.8),
    ("The cat sleeps on the sofa.", "Pets like warm places.", 1.0),
    ("The train was late this morning.", "Public transport is often crowded.", 0.8),
    ("A man is playing a guitar.", "The stock market fell sharply today.", 0.0),
    ("A woman is slicing an onion.", "The train was late this morning.", 0.0),
    ("The cat sleeps on the sofa.", "He bought a new car yesterday.", 0.0),
    ("Two children are running in a park.", "The committee approved the budget.", 0.0),
    ("A dog is catching a frisbee.", "Interest rates were raised by the bank.", 0.0),
    ("The stock market fell sharply today.", "A woman is knitting a scarf.", 0.0),
    ("He bought a new car yesterday.", "The volcano erupted last night.", 0.0),
    ("The train was late this morning.", "She paints flowers in watercolour.", 0.0),
]


def write_pairs(path: Path, rows: list[tuple[str, str, float]], *, delimiter: str = ",", header: str = "") -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        if header:
            handle.write(header + "\n")
        writer = csv.writer(handle, delimiter=delimiter)
        for row in rows:
            writer.writerow(row)
    return path


@pytest.fixture()
def sts_file(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "pairs.csv", PAIRS)


@pytest.mark.slow
def test_real_model_correlates_and_matches_sentence_transformers(encoder, sts_file: Path) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    pairs = read_sts_pairs(sts_file)
    report = evaluate_sts(pairs, models=[encoder], source=str(sts_file))
    (result,) = report.results
    assert set(result.spearman) == {"cosine", "euclidean", "manhattan", "dot"}
    # The model must tell paraphrases from unrelated pairs on this easy set.
    assert result.spearman["cosine"] > 80
    # Unit vectors: dot equals cosine, and Euclidean is a monotone function of it (same ranks).
    assert result.spearman["dot"] == pytest.approx(result.spearman["cosine"], abs=1e-6)
    assert result.spearman["euclidean"] == pytest.approx(result.spearman["cosine"], abs=1e-6)
    # The independent reference: sentence-transformers' own evaluator on the same pairs.
    reference = EmbeddingSimilarityEvaluator(
        [p[0] for p in PAIRS], [p[1] for p in PAIRS], [p[2] / 5 for p in PAIRS], show_progress_bar=False
    )(encoder.model)
    assert result.spearman["cosine"] == pytest.approx(100 * reference["spearman_cosine"], abs=1e-4)
    assert result.pearson["cosine"] == pytest.approx(100 * reference["pearson_cosine"], abs=1e-4)


def test_top_errors_are_the_largest_on_a_0_1_scale(encoder, sts_file: Path) -> None:  # type: ignore[no-untyped-def]
    report = evaluate_sts(read_sts_pairs(sts_file), models=[encoder])
    errors = report.top_errors(report.results[0], 3)
    assert len(errors) == 3
    sizes = [abs(e.error) for e in errors]
    assert sizes == sorted(sizes, reverse=True)
    all_errors = np.abs(report.results[0].predicted - report.gold())
    assert sizes[0] == pytest.approx(float(all_errors.max()))
    assert all(0 <= e.gold <= 1 and 0 <= e.predicted <= 1 for e in errors)
    # the gold of line 1 is 5 on 0-5
    assert report.gold()[0] == 1.0


@pytest.mark.slow
def test_cross_encoder_scored_side_by_side(encoder, sts_file: Path, tiny_cross_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import CrossEncoder

    pairs = read_sts_pairs(sts_file)
    report = evaluate_sts(pairs, models=[encoder], cross_encoders=[str(tiny_cross_encoder_path)])
    bi, cross = report.results
    assert (bi.kind, cross.kind) == ("bi-encoder", "cross-encoder")
    assert set(cross.spearman) == {"score"}
    expected = CrossEncoder(str(tiny_cross_encoder_path)).predict([(p[0], p[1]) for p in PAIRS])
    gold = [p[2] for p in PAIRS]
    assert cross.spearman["score"] == pytest.approx(100 * spearman(expected, gold), abs=1e-6)
    assert cross.pearson["score"] == pytest.approx(100 * pearson(expected, gold), abs=1e-6)


@pytest.mark.slow
def test_cli_json_and_table(encoder, sts_file: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["-q", "eval", "sts", str(sts_file), "--json", "--top-errors", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pairs"] == len(PAIRS)
    assert data["gold_range"] == [0.0, 5.0]
    (result,) = data["results"]
    assert result["name"] == encoder.name
    assert result["spearman"]["cosine"] > 80
    assert len(result["top_errors"]) == 2
    assert main(["-q", "eval", "sts", str(sts_file), "--top-errors", "1"]) == 0
    table = capsys.readouterr().out
    assert "Spearman x100" in table and "manhattan" in table and encoder.name in table
    assert "Largest errors" in table


def test_header_tsv_and_other_ranges(tmp_path: Path) -> None:
    rows = [(a, b, s * 20) for a, b, s in PAIRS[:4]]  # scores on 0-100
    # header columns are found by name, in any order, beside columns that are not used
    path = tmp_path / "p.tsv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("pair_id\tsentence2\tsentence1\tscore\n")
        for i, (a, b, s) in enumerate(rows):
            handle.write(f"{i}\t{b}\t{a}\t{s}\n")
    pairs = read_sts_pairs(path)
    assert [(p.sentence1, p.sentence2, p.score) for p in pairs] == rows
    assert pairs[0].line == 2
    unscored = tmp_path / "q.csv"
    unscored.write_text("anchor,positive\nhow do I reset my password,Resetting a password\n", encoding="utf-8")
    (pair,) = read_pairs(unscored)
    assert pair.score is None and pair.sentence2 == "Resetting a password"


def test_quoted_fields_with_commas_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('"Hello, world",Hi world,4\n"Two\nlines",Two lines,5\nThird,3rd,1\n', encoding="utf-8")
    pairs = read_sts_pairs(path)
    assert [p.sentence1 for p in pairs] == ["Hello, world", "Two\nlines", "Third"]
    assert [p.line for p in pairs] == [1, 2, 4]


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("a,b,1\nc,d\ne,f,2\n", 2, "columns"),
        ("a,b,1\nc,d,high\n", 2, "not a number"),
        ("a,b,1\n\nc,d,2\n", 2, "empty line"),
        ("a,b,1\nc,,2\n", 2, "sentence2 is empty"),
        ("sentence1,sentence2\na,b\n", 1, "no score column"),
        ("text,other,x\na,b,c\n", 1, "names no sentence columns"),
        ("just one column\n", 1, "column"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, content: str, line: int, fragment: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=fragment) as info:
        read_sts_pairs(path)
    assert str(path) in str(info.value)
    assert f"line {line}" in str(info.value)


def test_missing_empty_and_constant_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        read_sts_pairs(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputFileError, match="no sentence pairs"):
        read_sts_pairs(empty)
    constant = write_pairs(tmp_path / "c.csv", [("a", "b", 3.0), ("c", "d", 3.0)])
    with pytest.raises(InputFileError, match="every pair has the score 3"):
        evaluate_sts(read_sts_pairs(constant), cross_encoders=["unused"], source=str(constant))
    # through the CLI: one line on stderr, exit 1, no traceback
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,1\nc,d,x\n", encoding="utf-8")
    assert main(["-q", "eval", "sts", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}, line 2" in err and "Traceback" not in err


def test_gold_scale_is_the_smallest_common_one() -> None:
    from semsim_pg.evaluation.files import SentencePair, score_range

    def pairs(*scores: float) -> list[SentencePair]:
        return [SentencePair("a", "b", s, i) for i, s in enumerate(scores, start=1)]

    assert score_range(pairs(0.6, 4.8)) == (0.0, 5.0)  # a sample of STS-B: 0.6 stays 0.12, not 0
    assert score_range(pairs(0.2, 0.9)) == (0.0, 1.0)
    assert score_range(pairs(12, 96)) == (0.0, 100.0)
    assert score_range(pairs(-1, 1)) == (-1.0, 1.0)  # no common scale holds it: the observed range
