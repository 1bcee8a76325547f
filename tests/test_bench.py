"""The encoder benchmark on a handful of texts: figures are present and consistent, never timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semsim_pg.bench import benchmark_encoder, benchmark_encoders, load_texts
from semsim_pg.cli.main import main
from semsim_pg.errors import InputFileError, InvalidInput


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
def test_benchmark_reports_every_batch_size(encoder) -> None:  # type: ignore[no-untyped-def]
    texts = load_texts(limit=12)
    result = benchmark_encoder(encoder.name, texts, [4, 12])
    assert result.dimension == 384 and result.max_seq_length == encoder.max_seq_length
    assert result.texts == 12
    assert sorted(result.sentences_per_second) == [4, 12]
    assert all(rate > 0 for rate in result.sentences_per_second.values())
    with pytest.raises(InvalidInput, match="Batch sizes"):
        benchmark_encoders([encoder.name], texts, [0])


@pytest.mark.slow
def test_load_seconds_times_a_fresh_load_of_the_model(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The benchmark loads the model itself (not the shared, already loaded encoder), and the
    load time it reports contains that load."""
    import time

    from sentence_transformers import SentenceTransformer

    loads: list[float] = []
    original = SentenceTransformer.__init__

    def timed_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        original(self, *args, **kwargs)
        loads.append(time.perf_counter() - start)

    monkeypatch.setattr(SentenceTransformer, "__init__", timed_init)
    result = benchmark_encoder(encoder.name, ["one short text"], [1])
    assert len(loads) == 1
    assert result.load_seconds >= loads[0]


@pytest.mark.slow
def test_cli_json_and_table(encoder, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert main(["-q", "bench", "encoders", "--limit", "6", "--batch-sizes", "3,6", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == encoder.name and row["dimension"] == 384 and row["texts"] == 6
    assert set(row["sentences_per_second"]) == {"3", "6"}
    txt = tmp_path / "t.txt"
    txt.write_text("one sentence\nanother sentence\n", encoding="utf-8")
    assert main(["-q", "bench", "encoders", "--file", str(txt), "--batch-sizes", "2"]) == 0
    table = capsys.readouterr().out
    assert "2 texts" in table and "b=2" in table and encoder.name in table


def test_cli_rejects_bad_batch_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "encoders", "--batch-sizes", "16,x"])
    assert "comma-separated integers" in capsys.readouterr().err
