"""Backend selection as an operator meets it, with the real all-MiniLM-L6-v2: a full or unwritable
disk during auto's first measurement, corrupted exports, the record's file mode, processes with
different SEMSIM_THREADS, absurd thread counts, and what ``semsim info`` tells."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest

from semsim_pg.backends import BackendChoice, ExportCorrupted, OnnxRunner, model_hash
from semsim_pg.backends.auto import fingerprint, record_path
from semsim_pg.backends.export import backends_dir
from semsim_pg.encoder import Encoder
from semsim_pg.errors import ConfigurationError
from semsim_pg.settings import MAX_THREADS, Settings
from tests.test_backends import _copy_exports, _load_runner, _runner, configured

pytest.importorskip("onnxruntime")


def _record(data_dir: Path, encoder: Encoder, backend: str, threads: int | None) -> Path:
    """Write auto's record for ``threads`` as a measurement would, choosing ``backend``."""
    digest = model_hash(encoder.source.location)
    choice = BackendChoice(
        backend=backend,
        model=encoder.name,
        model_hash=digest,
        fingerprint=fingerprint(digest, threads),
        candidates=[{"backend": "torch", "gate": None, "speedup": 1.0}, {"backend": backend, "speedup": 2.0}],
        measured_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    path = record_path(data_dir, digest, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(choice.to_dict()), encoding="utf-8")
    return path


@pytest.mark.slow
def test_an_environment_failure_is_not_recorded(
    encoder, export_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """Both exports fail with an OSError (the export lock's path is a directory: a real failure
    even for root, as a full disk is): auto encodes with what it could measure, says so as a
    WARNING, and records nothing, so the next process measures again once the cause is gone."""
    base = backends_dir(tmp_path, model_hash(encoder.source.location))
    (base / ".lock").mkdir(parents=True)
    with configured(backend="auto", data_dir=tmp_path, threads=None):
        with caplog.at_level(logging.WARNING, logger="semsim_pg.backends"):
            first = Encoder(encoder.name).load()
        assert first.backend_name in ("torch", "torch-bf16")
        assert first.backend_choice is not None and first.backend_choice.fallback
        assert "IsADirectoryError" in first.backend_choice.fallback
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("onnx-int8 failed while measuring" in w for w in warnings), warnings
        assert any("measures again" in w for w in warnings), warnings
        assert not [p.name for p in base.iterdir() if p.suffix == ".json"]  # nothing recorded

        (base / ".lock").rmdir()  # the disk has room again
        shutil.copytree(export_dir / "backends", tmp_path / "backends", dirs_exist_ok=True)  # only measured
        umask = os.umask(0o022)
        try:
            second = Encoder(encoder.name).load()
        finally:
            os.umask(umask)
        choice = second.backend_choice
        assert choice is not None and not choice.reused and choice.fallback is None
        rows = {row["backend"]: row for row in choice.candidates}
        assert rows["onnx-int8"]["gate"]["passed"] and "error" not in rows["onnx-int8"]
        path = record_path(tmp_path, choice.model_hash, None)
        assert choice.path == str(path)
        # readable by another OS user (a service after `sudo semsim warmup`), as the exports are
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert Encoder(encoder.name).load().backend_choice.reused  # type: ignore[union-attr]


@pytest.mark.slow
def test_both_exports_corrupted_are_rebuilt(encoder, export_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The int8 export is quantised from the fp32 one: when both are truncated, the fp32 one is
    checked and rebuilt first, rather than quantised into a parser traceback."""
    _copy_exports(export_dir, tmp_path)
    base = backends_dir(tmp_path, model_hash(encoder.source.location))
    files = [base / "onnx" / "model.onnx", base / "onnx-int8" / "model.onnx"]
    for model_file in files:
        model_file.write_bytes(model_file.read_bytes()[:5000])
    runner = _runner(encoder, "onnx-int8", tmp_path)
    assert runner.name == "onnx-int8" and all(f.stat().st_size > 1_000_000 for f in files)
    reference = encoder.encode(["The dog chases the cat"])[0]
    assert float(runner.encode(["The dog chases the cat"], 1)[0] @ reference) > 0.93
    assert isinstance(_runner(encoder, "onnx", tmp_path), OnnxRunner)


def test_auto_falls_back_whatever_the_recorded_backend_raises(
    encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """Any failure to load a backend under auto (here: this torch cannot load bf16 weights, a
    RuntimeError) gives torch fp32 and a warning naming the fix, never a failed request."""
    _record(tmp_path, encoder, "torch-bf16", None)

    def load_torch(precision: str):  # type: ignore[no-untyped-def]
        if precision != "float32":
            raise RuntimeError(f"this torch build has no {precision} kernels")
        return encoder.model

    with caplog.at_level(logging.WARNING, logger="semsim_pg.backends.select"):
        runner, choice = _load_runner(encoder, "auto", tmp_path, load_torch=load_torch)
    assert runner.name == "torch" and runner.encode(["still works"], 8).shape == (1, 384)
    assert choice is not None and "no bfloat16 kernels" in (choice.fallback or "")
    assert "torch fp32" in caplog.text and "SEMSIM_BACKEND=torch" in caplog.text
    assert choice.summary().startswith("torch (auto fell back: RuntimeError")


def test_each_threads_setting_keeps_its_own_record(encoder, export_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A web server with SEMSIM_THREADS=1 and a worker without it share a data dir: each reuses
    its own record instead of measuring again over the other's at every start."""
    _copy_exports(export_dir, tmp_path)
    one = _record(tmp_path, encoder, "onnx-int8", 1)
    default = _record(tmp_path, encoder, "onnx", None)
    assert one != default
    stamps = {p: p.stat().st_mtime_ns for p in (one, default)}
    for _ in range(2):
        for threads, backend in ((1, "onnx-int8"), (None, "onnx")):
            with configured(backend="auto", data_dir=tmp_path, threads=threads):
                loaded = Encoder(encoder.name)
                assert loaded.backend_name == backend
                assert loaded.backend_choice is not None and loaded.backend_choice.reused
    assert {p: p.stat().st_mtime_ns for p in (one, default)} == stamps
    # another model hash (a changed model) still finds no record, and measures
    other = fingerprint("0" * 64, 1)
    assert (
        record_path(tmp_path, "0" * 64, 1) != one and other["model_hash"] != json.loads(one.read_text())["model_hash"]
    )


def test_threads_are_bounded(encoder, export_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An absurd SEMSIM_THREADS is a one-line settings error, and never taken for a corrupted
    export: the good export stays."""
    for raw in ("99999999999", str(MAX_THREADS + 1)):
        with pytest.raises(ConfigurationError, match="SEMSIM_THREADS") as info:
            Settings.from_env({"SEMSIM_THREADS": raw})
        assert "\n" not in str(info.value) and raw in str(info.value)
    assert Settings.from_env({"SEMSIM_THREADS": str(MAX_THREADS)}).threads == MAX_THREADS
    _copy_exports(export_dir, tmp_path)
    model_file = backends_dir(tmp_path, model_hash(encoder.source.location)) / "onnx-int8" / "model.onnx"
    before = model_file.stat().st_mtime_ns
    with pytest.raises(ConfigurationError, match="SEMSIM_THREADS") as raised:
        _runner(encoder, "onnx-int8", tmp_path, threads=99999999999)
    assert not isinstance(raised.value, ExportCorrupted)
    assert model_file.stat().st_mtime_ns == before  # not deleted and rebuilt


@pytest.mark.slow
def test_info_shows_the_cpu_and_auto_figures(encoder, engine, settings, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """`semsim info` names the CPU and its relevant flags, the threads, the record that applies to
    its own settings and each candidate's figures (the session's data dir: another one would
    start another embedded server; threads=7 is a setting no other test uses)."""
    from semsim_pg.cli.main import main

    path = _record(settings.data_dir, encoder, "onnx-int8", 7)
    try:
        with configured(threads=7):
            assert main(["info", "--json", "--no-model"]) == 0
            backend = json.loads(capsys.readouterr().out)["backend"]
            assert backend["record"] == str(path) and backend["chosen"] == "onnx-int8" and backend["threads"] == 7
            assert backend["cpu"]["model"] and "int8" in backend["cpu"]
            assert [row["backend"] for row in backend["candidates"]] == ["torch", "onnx-int8"]
            assert main(["info", "--no-model"]) == 0
            text = capsys.readouterr().out
            assert "CPU " in text and "native bf16" in text and str(path) in text
            assert "onnx-int8   2.00x torch fp32" in text
        with configured(threads=3):  # no record for this setting
            assert main(["info", "--json", "--no-model"]) == 0
            assert json.loads(capsys.readouterr().out)["backend"]["record"] is None
    finally:
        path.unlink()
