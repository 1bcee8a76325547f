"""Encoder backends with the real all-MiniLM-L6-v2: ONNX exports, the int8 quality gate, ``auto``'s
recorded choice, broken caches, concurrent exports, threads. One export per session."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semsim_pg.backends import (
    GATE_MEAN_COSINE,
    GATE_MIN_COSINE,
    GateResult,
    OnnxRunner,
    gate_sample,
    load_runner,
    model_hash,
)
from semsim_pg.backends.auto import fingerprint, read_choice, record_path
from semsim_pg.backends.cpu import encoder_threads, parse_cpuinfo
from semsim_pg.backends.export import backends_dir
from semsim_pg.encoder import Encoder
from semsim_pg.errors import BackendUnavailable, ConfigurationError
from semsim_pg.settings import Settings, configure, get_settings

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def sample_vectors(encoder) -> tuple[Any, np.ndarray]:  # type: ignore[no-untyped-def]
    sample = gate_sample()
    return sample, encoder.encode(sample.texts)


@contextlib.contextmanager
def configured(**changes: Any) -> Iterator[Settings]:
    before = get_settings()
    try:
        yield configure(before.replace(**changes))
    finally:
        configure(before)


def _copy_exports(source: Path, target: Path) -> None:
    shutil.copytree(source / "backends", target / "backends")


def _load_runner(encoder: Encoder, backend: str, data_dir: Path, threads: int | None = None, load_torch=None):  # type: ignore[no-untyped-def]
    """``load_runner`` on the session's model (``load_torch``: how torch weights load, default the model as is)."""
    return load_runner(
        backend,
        name=encoder.name,
        location=encoder.source.location,
        data_dir=data_dir,
        precision="float32",
        device="cpu",
        threads=threads,
        load_torch=load_torch or (lambda precision: encoder.model),
    )


def _runner(encoder: Encoder, backend: str, data_dir: Path, threads: int | None = None):  # type: ignore[no-untyped-def]
    return _load_runner(encoder, backend, data_dir, threads)[0]


# CPU detection and settings ---------------------------------------------------------------------
def test_cpu_flags_decide_bf16_and_int8() -> None:
    avx2 = parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n")
    assert avx2.model == "AMD EPYC 7B13" and not avx2.native_bf16 and avx2.int8_acceleration == "avx2"
    spr = parse_cpuinfo(
        "model name : Intel(R) Xeon(R) Platinum 8481C\nflags : avx2 avx512f avx512_vnni amx_bf16 amx_int8\n"
    )
    assert spr.native_bf16 and spr.int8_acceleration == "amx"
    zen4 = parse_cpuinfo("model name : AMD EPYC 9B14\nflags : avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert zen4.native_bf16 and zen4.int8_acceleration == "avx512_vnni"


def test_backend_and_threads_settings() -> None:
    with pytest.raises(
        ConfigurationError, match="backend must be one of auto, torch, torch-bf16, onnx, onnx-int8"
    ) as info:
        Settings(backend="tensorrt")
    assert "\n" not in str(info.value)
    assert Settings.from_env({"SEMSIM_BACKEND": "onnx-int8", "SEMSIM_THREADS": "3"}).threads == 3
    assert Settings.from_env({}).backend == "auto" and Settings.from_env({}).threads is None
    with pytest.raises(ConfigurationError, match="threads must be >= 1"):
        Settings.from_env({"SEMSIM_THREADS": "0"})
    with pytest.raises(ConfigurationError, match="SEMSIM_THREADS must be a whole number"):
        Settings.from_env({"SEMSIM_THREADS": "many"})


def test_default_threads_follow_the_load_when_the_model_loads(
    encoder, export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Unset SEMSIM_THREADS: the library's default on an idle machine, the free cores on a busy
    one (two busy intra-op threads were slower than one, measured); a set value always wins. The
    auto record stays keyed by the setting, so a busier moment does not measure again."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert encoder_threads(None) is None and encoder_threads(3) == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (2.7, 2.0, 1.0))
    assert encoder_threads(None) == 1 and encoder_threads(3) == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert encoder_threads(None) == 1
    runner = _runner(encoder, "onnx-int8", export_dir)
    assert runner.session.get_session_options().intra_op_num_threads == 1
    assert fingerprint("digest", None)["threads"] == "default"
    runner = _runner(encoder, "onnx-int8", export_dir, threads=2)
    assert runner.session.get_session_options().intra_op_num_threads == 2


# exports and the gate ---------------------------------------------------------------------------
@pytest.mark.slow
def test_onnx_fp32_reproduces_torch(encoder, export_dir: Path, sample_vectors) -> None:  # type: ignore[no-untyped-def]
    sample, reference = sample_vectors
    runner = _runner(encoder, "onnx", export_dir)
    assert isinstance(runner, OnnxRunner) and runner.name == "onnx"
    vectors = runner.encode(sample.texts, 16)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.einsum("ij,ij->i", vectors, reference).min() > 0.9999
    # The same tokens as sentence-transformers' tokenizer, truncation included.
    long_text = " ".join(["word"] * 400)
    texts = ["  Hi!  ", "I don't know.", long_text]
    assert runner.token_counts(texts) == encoder.runner.token_counts(texts)
    assert runner.token_spans(texts) == encoder.runner.token_spans(texts)  # passages split alike
    assert runner.max_seq_length == encoder.max_seq_length and runner.dimension == 384
    assert float(runner.encode([long_text], 1)[0] @ encoder.encode([long_text])[0]) > 0.9999


@pytest.mark.slow
def test_int8_passes_the_gate(encoder, export_dir: Path, sample_vectors) -> None:  # type: ignore[no-untyped-def]
    sample, reference = sample_vectors
    vectors = _runner(encoder, "onnx-int8", export_dir).encode(sample.texts, 32)
    gate = GateResult.measure("onnx-int8", sample, reference, vectors)
    cosines = (vectors.astype(np.float64) * reference).sum(axis=1)  # independent of cosine_stats
    assert gate.mean_cosine == pytest.approx(cosines.mean(), abs=1e-6)
    assert gate.min_cosine == pytest.approx(cosines.min(), abs=1e-6)
    assert gate.passed, gate.reasons
    assert gate.mean_cosine >= GATE_MEAN_COSINE and gate.min_cosine >= GATE_MIN_COSINE
    assert gate.mean_cosine < 0.99999  # int8 does move the vectors: the gate measured something
    assert abs(gate.spearman_drop) <= 0.5
    # Vectors moved as far as per-tensor int8 moves short sentences fail it.
    rng = np.random.default_rng(0)
    noisy = reference + rng.normal(scale=0.02, size=reference.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    bad = GateResult.measure("noisy", sample, reference, noisy)
    assert not bad.passed and any("cosine" in reason for reason in bad.reasons)


# auto ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_auto_records_its_choice_and_reuses_it(
    encoder, export_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    _copy_exports(export_dir, tmp_path)  # measured, not exported again
    with configured(backend="auto", data_dir=tmp_path):
        first = Encoder(encoder.name)
        vector = first.encode_query("where is my parcel")
        choice = first.backend_choice
        assert choice is not None and not choice.reused
        record_file = record_path(tmp_path, model_hash(encoder.source.location), None)
        record = json.loads(record_file.read_text(encoding="utf-8"))
        assert record["backend"] == first.backend_name == choice.backend
        rows = {row["backend"]: row for row in record["candidates"]}
        assert {"torch", "onnx", "onnx-int8"} <= set(rows)
        assert rows["onnx-int8"]["gate"]["mean_cosine"] >= GATE_MEAN_COSINE
        if choice.backend != "torch":
            chosen = rows[choice.backend]
            assert chosen["gate"]["passed"] and chosen["speedup"] == max(
                r.get("speedup", 0) for r in rows.values() if r.get("gate") is None or r["gate"]["passed"]
            )
        assert record["fingerprint"]["cpu"]["model"] and record["fingerprint"]["versions"]["onnxruntime"]
        info = first.describe()
        assert info["backend"] == choice.backend and info["backend_requested"] == "auto"
        assert info["backend_choice"].startswith(choice.backend)
        assert float(vector @ encoder.encode_query("where is my parcel")) > GATE_MIN_COSINE

        mtime = record_file.stat().st_mtime_ns
        second = Encoder(encoder.name)
        assert second.backend_name == choice.backend
        assert second.backend_choice is not None and second.backend_choice.reused
        assert record_file.stat().st_mtime_ns == mtime

    expected = fingerprint(record["model_hash"], None)
    assert read_choice(record_file, expected) is not None
    changed = json.loads(json.dumps(expected))
    changed["versions"]["onnxruntime"] = "0.0.1"
    assert read_choice(record_file, changed) is None  # another library version: measure again
    record_file.write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="semsim_pg.backends.auto"):
        assert read_choice(record_file, expected) is None
    assert "unreadable backend record" in caplog.text


@pytest.mark.slow
def test_unwritable_data_dir(encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    data_dir = blocker / "semsim"  # mkdir fails here even for root
    with pytest.raises(BackendUnavailable) as info:
        _runner(encoder, "onnx-int8", data_dir)
    message = str(info.value)
    assert "\n" not in message and "SEMSIM_BACKEND=torch" in message and str(data_dir) in message
    with caplog.at_level(logging.WARNING, logger="semsim_pg.backends.select"):
        runner = _runner(encoder, "auto", data_dir)
    assert runner.name == "torch"
    assert "auto cannot choose a backend" in caplog.text and "torch fp32" in caplog.text
    assert runner.encode(["still works"], 8).shape == (1, 384)


@pytest.mark.slow
def test_corrupted_export_is_rebuilt(
    encoder, export_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    _copy_exports(export_dir, tmp_path)
    onnx_dir = backends_dir(tmp_path, model_hash(encoder.source.location)) / "onnx-int8"
    model_file = onnx_dir / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:5000])  # truncated
    with caplog.at_level(logging.WARNING, logger="semsim_pg.backends.select"):
        runner = _runner(encoder, "onnx-int8", tmp_path)
    assert "unusable" in caplog.text
    assert model_file.stat().st_size > 1_000_000
    reference = encoder.encode(["The dog chases the cat"])[0]
    assert float(runner.encode(["The dog chases the cat"], 1)[0] @ reference) > GATE_MIN_COSINE


_EXPORT_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time
    from pathlib import Path
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from sentence_transformers import SentenceTransformer
    from semsim_pg.backends import ensure_export
    from semsim_pg.encoder import resolve_model

    data_dir, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    source = resolve_model("all-MiniLM-L6-v2")
    (data_dir / me).touch()
    while not (data_dir / other).exists():  # start exporting together
        time.sleep(0.05)
    export = ensure_export("onnx", name=source.name, location=source.location, data_dir=data_dir,
                           load_fp32=lambda: SentenceTransformer(source.location, device="cpu"))
    print(json.dumps({"created": export.created, "path": str(export.path)}))
    """
)


@pytest.mark.slow
def test_concurrent_processes_export_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _EXPORT_SCRIPT, str(tmp_path), f"ready-{n}", f"ready-{1 - n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sorted(r["created"] for r in results) == [False, True]
    assert results[0]["path"] == results[1]["path"]
    assert sum("exporting" in err for _, err in outputs) == 1
    assert any("waiting for another process" in err for _, err in outputs)
    exports = [p for p in Path(results[0]["path"]).parent.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in exports] == ["onnx"]  # no temporary directory left behind


# threads ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_threads_setting_and_concurrent_encodes(encoder, export_dir: Path) -> None:  # type: ignore[no-untyped-def]
    with configured(backend="onnx-int8", data_dir=export_dir, threads=1):
        shared = Encoder(encoder.name, cache_size=0)
        runner = shared.runner
        assert isinstance(runner, OnnxRunner)
        assert runner.session.get_session_options().intra_op_num_threads == 1
        assert shared.describe()["backend"] == "onnx-int8"
        texts = [f"sentence number {i} about {word}" for i, word in enumerate(["cats", "tax", "trains", "rain"] * 4)]
        expected = shared.encode(texts)
        results: dict[int, np.ndarray] = {}

        def work(n: int) -> None:
            results[n] = shared.encode(texts[n:] + texts[:n])

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n, got in results.items():
            assert np.allclose(got, np.roll(expected, -n, axis=0), atol=1e-5)
        assert shared.encoded_count == 5 * len(texts)


@pytest.mark.slow
def test_bench_compares_int8_with_the_reference(encoder, export_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.bench import REFERENCE, benchmark_backends, load_texts

    with configured(data_dir=export_dir):
        reference, int8 = benchmark_backends(
            encoder.name, ["onnx-int8"], load_texts(limit=16), batch_size=8, rounds=1, query_repeats=1
        )
    assert reference.backend == REFERENCE and int8.backend == "onnx-int8"
    assert GATE_MIN_COSINE <= int8.min_cosine <= int8.mean_cosine < 1.0


@pytest.mark.slow
def test_info_shows_the_backend(encoder, engine, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli.main import main

    assert main(["info", "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["backend"] == "torch" and model["backend_requested"] == "torch" and model["backend_choice"] is None
    assert main(["info"]) == 0
    assert "backend      torch (SEMSIM_BACKEND=torch)" in capsys.readouterr().out


def test_a_query_has_one_vector_whichever_api_asks(encoder, export_dir: Path, store, collection_name) -> None:  # type: ignore[no-untyped-def]
    """Dynamic int8 quantises activations with one scale per batch: a text encoded with others
    gets another vector than alone. Queries are encoded alone by every API (search, search_many,
    FAQ match_many, eval retrieval), so that an evaluation measures what a live search returns."""
    from semsim_pg.store import DocumentStore

    queries = ["Hi!", "I don't know.", "The feline is being pursued by the canine across the whole of the garden."]
    with configured(backend="onnx-int8", data_dir=export_dir):
        int8 = Encoder(encoder.name)
        assert int8.backend_name == "onnx-int8" and not int8.runner.batch_invariant
        together = int8.encode(queries)
        alone = np.stack([int8.encode_query(q) for q in queries])
        assert np.einsum("ij,ij->i", together, alone).min() < 0.9999  # the batch moves them
        assert np.array_equal(np.stack(int8.encode_queries(queries)), alone)
        fp32 = Encoder(encoder.name, backend="onnx")
        int8_store = DocumentStore(encoder=int8, settings=store.settings)
        int8_store.create_collection(collection_name)
        int8_store.upsert(collection_name, [(str(i), q) for i, q in enumerate(queries)])
        many = int8_store.search_many(collection_name, queries, k=3)
        one = [int8_store.search(collection_name, q, k=3) for q in queries]
        assert [[(h.external_id, h.similarity) for h in hits] for hits in many] == [
            [(h.external_id, h.similarity) for h in hits] for hits in one
        ]
        assert fp32.runner.batch_invariant  # fp32: a batch gives each text its vector alone
    assert encoder.runner.batch_invariant  # torch masks the padding out
