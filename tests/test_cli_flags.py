"""Flags the reviewer found read wrong: a FAISS parameter of 0 became its default (negatives were
refused), and the rest of the small CLI and evaluation fixes of that review."""

from __future__ import annotations

from pathlib import Path

import pytest


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("semsim: error: "), err
    return err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--index", "hnsw", "--ef-construction", "0"], "--ef-construction must be at least 1, got 0."),
        (["--index", "hnsw", "--m", "0"], "--m must be at least 2, got 0."),
        (["--index", "hnsw", "--m", "-3"], "--m must be at least 2, got -3."),
        (["--index", "ivfflat", "--nlist", "0"], "--nlist must be at least 1, got 0."),
        (["--index", "ivfpq", "--pq-bits", "0"], "--pq-bits must be at least 1, got 0."),
        (["--index", "ivfpq", "--pq-m", "0"], "--pq-m must be at least 1, got 0."),
    ],
)
def test_faiss_build_refuses_zero_as_it_refuses_negatives(  # type: ignore[no-untyped-def]
    store, collection_name, tmp_path: Path, capsys, flags: list[str], message: str
) -> None:
    from semsim_pg.cli.main import main

    store.create_collection(collection_name)
    store.upsert(collection_name, [(f"d{i}", f"sentence number {i}") for i in range(4)])
    capsys.readouterr()  # the model's loading bar
    out = tmp_path / "ix"
    err = one_line_error(capsys, main(["-q", "faiss", "build", "-c", collection_name, "--out", str(out), *flags]))
    assert err.endswith(message)
    assert not out.exists()  # nothing built with a default instead


def test_faiss_compare_refuses_a_sample_of_zero(store, collection_name, capsys) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli.main import main

    store.create_collection(collection_name)
    store.upsert(collection_name, [(f"d{i}", f"sentence number {i}") for i in range(4)])
    capsys.readouterr()  # the model's loading bar
    err = one_line_error(capsys, main(["-q", "faiss", "compare", "-c", collection_name, "--sample", "0"]))
    assert err.endswith("--sample must be at least 1, got 0.")


def test_eval_faq_names_the_expected_header_without_an_empty_optional_part(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys
) -> None:
    """It said `expected query, faq_id[, ].` (the queries file has no optional column)."""
    from semsim_pg.cli.main import main
    from semsim_pg.errors import InputFileError
    from semsim_pg.faq.files import read_faq_queries

    queries = tmp_path / "q.tsv"
    queries.write_text("foo\tbar\nhow do I return this\treturn-how\n", encoding="utf-8")
    with pytest.raises(InputFileError) as error:
        read_faq_queries(queries)
    assert str(error.value).endswith("lacks query, faq_id; expected query, faq_id.")
    queries.write_text("query\tfaq_id\tnote\nhow do I return this\treturn-how\tx\n", encoding="utf-8")
    with pytest.raises(InputFileError) as error:
        read_faq_queries(queries)
    assert str(error.value).endswith("unknown column(s) note; expected query, faq_id.")
    faqs = tmp_path / "faqs.tsv"
    faqs.write_text("faq_id\tquestion\tanswer\nreturn-how\tHow do I return an item?\tUse the form.\n")
    err = one_line_error(capsys, main(["-q", "eval", "faq", "--faqs", str(faqs), "--queries", str(queries)]))
    assert err.endswith("expected query, faq_id.") and "[" not in err


def test_a_ragged_line_of_a_pairs_file_is_refused_with_its_line(tmp_path: Path) -> None:
    """`a,b,3,extra` among 3-column lines was read as a pair scored 3 and the rest dropped."""
    from semsim_pg.errors import InputFileError
    from semsim_pg.evaluation.files import read_pairs, read_sts_pairs

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a cat,a kitten,4\nstocks fell,markets fell,3,extra\nrain,sun,1\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"ragged\.csv, line 2: found 4 columns, but line 1 has 3"):
        read_sts_pairs(ragged)
    ragged.write_text("a,b,3,extra\nc,d,1\ne,f,4\n", encoding="utf-8")  # the reviewer's: the odd line first
    with pytest.raises(InputFileError, match="line 2: found 3 columns, but line 1 has 4"):
        read_sts_pairs(ragged)
    ragged.write_text("a cat,a kitten\nstocks fell,markets fell,3\n", encoding="utf-8")  # a score on one line only
    with pytest.raises(InputFileError, match="line 2: found 3 columns, but line 1 has 2"):
        read_pairs(ragged)
    # files whose columns are named, or wider files of their own, are read as before
    named = tmp_path / "named.tsv"
    named.write_text("sentence1\tsentence2\tscore\tgenre\na cat\ta kitten\t4\tx\nrain\tsun\t1\n", encoding="utf-8")
    assert [p.score for p in read_sts_pairs(named)] == [4.0, 1.0]
    wide = tmp_path / "wide.tsv"
    wide.write_text("a cat\ta kitten\t4\tforum\t2012\nrain\tsun\t1\tnews\n", encoding="utf-8")
    assert [p.score for p in read_sts_pairs(wide)] == [4.0, 1.0]
    # STS-B as the project ships it still loads whole
    stsb = Path("/work/shared/data/stsb/stsb-en-dev.csv")
    if stsb.exists():
        assert len(read_sts_pairs(stsb)) == 1500


def test_eval_retrieval_help_says_candidates_is_for_reranking() -> None:
    from semsim_pg.cli.main import build_parser

    parser = build_parser()
    (evals,) = [a for a in parser._subparsers._group_actions if "eval" in a.choices]  # type: ignore[union-attr]
    retrieval = evals.choices["eval"]._subparsers._group_actions[0].choices["retrieval"]  # type: ignore[union-attr]
    (candidates,) = [a for a in retrieval._actions if "--candidates" in a.option_strings]
    assert candidates.help is not None and candidates.help.startswith("with --rerank:")
    assert "first-stage hits per query (default 100)" not in candidates.help
