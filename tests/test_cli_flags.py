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
