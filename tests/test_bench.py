"""The encoder benchmark on a handful of texts: figures are present and consistent, never timed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from semsim_pg.bench import REFERENCE, EncoderBenchmark, benchmark_backends, load_texts
from semsim_pg.cli.bench import format_encoder_table
from semsim_pg.cli.main import main
from semsim_pg.errors import InputFileError, InvalidInput
from semsim_pg.evaluation.files import read_sts_pairs


def test_load_texts_default_file_and_limit(tmp_path: Path) -> None:
    sample = load_texts()
    assert len(sample) > 20 and all(isinstance(t, str) and t for t in sample)
    assert load_texts(limit=5) == sample[:5]
    txt = tmp_path / "t.txt"
    txt.write_text("first\n\nsecond\nthird\n", encoding="utf-8")
    assert load_texts(txt) == ["first", "second", "third"]
    assert load_texts(txt, 2) == ["first", "second"]


def test_load_texts_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        load_texts(tmp_path / "missing.txt")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputFileError, match="no texts"):
        load_texts(blank)
    with pytest.raises(InvalidInput, match="--limit"):
        load_texts(limit=0)


@pytest.mark.slow
def test_benchmark_against_the_reference(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = load_texts(limit=12)
    sts = tmp_path / "sts.csv"
    sts.write_text(
        "A dog runs.,A dog is running.,4.8\nA man cooks.,Someone is cooking.,3.9\n"
        "A cat sleeps.,The stock market fell.,0.2\nKids play football.,Children play soccer.,4.5\n",
        encoding="utf-8",
    )
    pairs = read_sts_pairs(sts)
    reference, torch_row = benchmark_backends(
        encoder.name, ["torch"], texts, batch_size=4, rounds=2, query_repeats=2, sts_pairs=pairs
    )
    assert reference.backend == REFERENCE and reference.speedup == 1.0 and reference.query_speedup == 1.0
    assert torch_row.backend == "torch" and torch_row.requested == "torch"
    assert torch_row.dimension == 384 and torch_row.texts == 12 and len(torch_row.rounds) == 2
    assert torch_row.sentences_per_second > 0 and torch_row.query_ms > 0
    # The torch backend is the same fp32 computation as the reference.
    assert torch_row.min_cosine > 0.9999
    assert torch_row.speedup == pytest.approx(torch_row.sentences_per_second / reference.sentences_per_second)
    assert reference.sts_spearman is not None and torch_row.sts_spearman == pytest.approx(reference.sts_spearman)
    with pytest.raises(InvalidInput, match="Unknown backend"):
        benchmark_backends(encoder.name, ["tensorrt"], texts)
    with pytest.raises(InvalidInput, match="at least 1"):
        benchmark_backends(encoder.name, ["torch"], texts, batch_size=0)


@pytest.mark.slow
def test_load_seconds_times_a_fresh_load_of_the_model(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The benchmark loads the models itself (not the shared, already loaded encoder), and the
    load time each row reports contains its load."""
    import time

    from sentence_transformers import SentenceTransformer

    loads: list[float] = []
    original = SentenceTransformer.__init__

    def timed_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        original(self, *args, **kwargs)
        loads.append(time.perf_counter() - start)

    monkeypatch.setattr(SentenceTransformer, "__init__", timed_init)
    reference, torch_row = benchmark_backends(encoder.name, ["torch"], ["one short text"], rounds=1, query_repeats=1)
    assert len(loads) == 2  # the reference's model and the torch backend's, both fresh
    assert reference.load_seconds >= loads[0] and torch_row.load_seconds >= loads[1]


@pytest.mark.slow
def test_cli_json_table_and_plot(encoder, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    txt = tmp_path / "t.txt"
    txt.write_text("one sentence\nanother sentence\n", encoding="utf-8")
    png = tmp_path / "bench.png"
    argv = ["-q", "bench", "encoders", "--backends", "torch", "--rounds", "1", "--batch-size", "3"]
    assert main([*argv, "--file", str(txt), "--json", "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    reference, row = rows
    # the machine the figures come from: a bare list of rows named no CPU
    from semsim_pg.backends import cpu_info

    machine = report["machine"]
    assert machine["cpu"] == cpu_info().model and machine["cores"] >= 1 and machine["threads"] >= 1
    assert machine["libraries"]["torch"] and machine["libraries"]["sentence-transformers"]
    assert reference["backend"] == REFERENCE and row["backend"] == "torch"
    assert row["model"] == encoder.name and row["dimension"] == 384 and row["texts"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = io.StringIO()
    format_encoder_table([EncoderBenchmark(**{**r, "load_seconds": 1.0}) for r in rows], out, machine=machine)
    table = out.getvalue()
    assert table.startswith(f"CPU: {machine['cpu']} ({machine['cores']} cores")
    assert f"torch {machine['libraries']['torch']}" in table
    assert "2 texts" in table and REFERENCE in table and "torch" in table and encoder.name in table


def test_cli_rejects_bad_backends(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "encoders", "--backends", "torch,tensorrt"])
    assert "comma-separated backends" in capsys.readouterr().err


@pytest.mark.slow
def test_warmup(encoder, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["-q", "warmup", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == encoder.name and info["backend"] == "torch" and info["warmup_seconds"] >= 0
    assert main(["-q", "warmup"]) == 0
    assert "ready in" in capsys.readouterr().out
