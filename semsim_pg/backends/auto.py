"""``SEMSIM_BACKEND=auto``: measure once per machine, model and library versions, then reuse.

The first time a model is used on a machine, every candidate backend encodes the gate sample
(:mod:`semsim_pg.backends.gate`); those that pass the gate against torch fp32 are timed, in
interleaved rounds so that a shared CPU's slow moments fall on all of them, and the fastest is
chosen. The choice and its figures go to ``<data dir>/backends/<model hash>/auto.json``; a later
process reuses them while the fingerprint (model hash, CPU model and flags, library versions,
thread count) is unchanged, and measures again when it is not.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semsim_pg.backends.cpu import cpu_info
from semsim_pg.backends.export import backends_dir, file_lock, model_hash, versions
from semsim_pg.backends.gate import (
    GATE_MAX_SPEARMAN_DROP,
    GATE_MEAN_COSINE,
    GATE_MIN_COSINE,
    GateResult,
    gate_sample,
)
from semsim_pg.backends.runners import Runner

__all__ = ["AUTO_RECORD", "BackendChoice", "candidate_backends", "choose_backend", "fingerprint"]

logger = logging.getLogger(__name__)

AUTO_RECORD = "auto.json"
#: a faster backend must beat torch fp32 by this factor to be chosen over it (timing noise)
MIN_SPEEDUP = 1.05
TIMING_ROUNDS = 3
#: texts of the gate sample that are timed (every other one: short and long mixed), to keep the
#: first use short on a slow machine
TIMING_TEXTS = 64
TIMING_BATCH = 32
QUERY_REPEATS = 7


@dataclass
class BackendChoice:
    """What ``auto`` chose for a model on this machine, and why."""

    backend: str
    model: str
    model_hash: str
    fingerprint: dict[str, Any]
    #: per backend: its gate figures, sentences/s, one-query ms and speed-up over torch fp32
    candidates: list[dict[str, Any]] = field(default_factory=list)
    measured_at: str = ""
    path: str | None = None
    #: True when read from the record rather than measured by this process
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "model_hash": self.model_hash,
            "measured_at": self.measured_at,
            "fingerprint": self.fingerprint,
            "candidates": self.candidates,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> BackendChoice:
        return cls(
            backend=str(data["backend"]),
            model=str(data["model"]),
            model_hash=str(data["model_hash"]),
            fingerprint=dict(data["fingerprint"]),
            candidates=list(data["candidates"]),
            measured_at=str(data["measured_at"]),
            path=str(path),
            reused=True,
        )

    def summary(self) -> str:
        chosen = next((c for c in self.candidates if c["backend"] == self.backend), {})
        speed = chosen.get("speedup")
        gate = chosen.get("gate") or {}
        parts = [self.backend]
        if speed:
            parts.append(f"{speed:.2f}x torch fp32")
        if gate.get("mean_cosine") is not None:
            parts.append(f"cosine mean {gate['mean_cosine']:.4f} / worst {gate['min_cosine']:.4f}")
        parts.append(f"measured {self.measured_at}")
        return ", ".join(parts)


def candidate_backends() -> list[str]:
    """Backends worth measuring on this CPU: bf16 only where it runs in hardware, onnx where installed."""
    found = ["torch"]
    if cpu_info().native_bf16:
        found.append("torch-bf16")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        logger.info("onnxruntime is not installed: auto considers torch only (pip install 'semsim[onnx]')")
    else:
        found += ["onnx", "onnx-int8"]
    return found


def fingerprint(digest: str, threads: int | None) -> dict[str, Any]:
    """What the choice depends on: when any of it changes, ``auto`` measures again."""
    return {
        "model_hash": digest,
        "cpu": cpu_info().to_dict(),
        "versions": versions(),
        "threads": threads or "default",
        "cpu_count": os.cpu_count(),
        "gate": {
            "mean_cosine": GATE_MEAN_COSINE,
            "min_cosine": GATE_MIN_COSINE,
            "spearman_drop": GATE_MAX_SPEARMAN_DROP,
        },
    }


def _sample_digest() -> str:
    sample = gate_sample()
    blob = json.dumps([sample.texts, sample.pairs, sample.labels]).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def read_choice(path: Path, expected: dict[str, Any]) -> BackendChoice | None:
    """The recorded choice if it is readable and was made under the same fingerprint."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        choice = BackendChoice.from_dict(data, path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring the unreadable backend record %s (%s); measuring again", path, exc)
        return None
    if choice.fingerprint != expected:
        changed = sorted(k for k in expected if choice.fingerprint.get(k) != expected[k])
        logger.info("backend record %s was made with another %s; measuring again", path, ", ".join(changed))
        return None
    return choice


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".auto-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def choose_backend(
    *,
    name: str,
    location: str,
    data_dir: Path,
    threads: int | None,
    make_runner: Callable[[str], Runner],
) -> tuple[BackendChoice, Runner]:
    """The recorded choice for this model and machine, or a new measurement (recorded).

    ``make_runner(backend)`` builds a runner (exporting when needed). Returns the choice and the
    chosen backend's runner. Raises OSError / BackendUnavailable when nothing can be recorded:
    the caller falls back to torch.
    """
    digest = model_hash(location)
    base = backends_dir(data_dir, digest)
    path = base / AUTO_RECORD
    expected = fingerprint(digest, threads)
    choice = read_choice(path, expected)
    if choice is None:
        base.mkdir(parents=True, exist_ok=True)
        # Its own lock file: the export lock is taken inside, and flock does not nest.
        with file_lock(base / ".auto.lock"):
            choice = read_choice(path, expected)  # measured by another process while we waited
            if choice is None:
                choice, runner = _measure(name=name, digest=digest, expected=expected, make_runner=make_runner)
                _write_atomically(path, json.dumps(choice.to_dict(), indent=2))
                choice.path = str(path)
                logger.info("backend for %s on this machine: %s (recorded in %s)", name, choice.summary(), path)
                return choice, runner
    logger.info("backend for %s: %s (from %s)", name, choice.summary(), path)
    return choice, make_runner(choice.backend)


def _measure(
    *, name: str, digest: str, expected: dict[str, Any], make_runner: Callable[[str], Runner]
) -> tuple[BackendChoice, Runner]:
    from semsim_pg.errors import BackendUnavailable

    sample = gate_sample()
    logger.info("SEMSIM_BACKEND=auto: measuring the backends for %s on this machine (once)", name)
    reference_runner = make_runner("torch")
    reference = reference_runner.encode(sample.texts, TIMING_BATCH)
    runners: dict[str, Runner] = {"torch": reference_runner}
    rows: dict[str, dict[str, Any]] = {"torch": {"backend": "torch", "gate": None}}
    for backend in candidate_backends()[1:]:
        row: dict[str, Any] = {"backend": backend}
        rows[backend] = row
        try:
            runner = make_runner(backend)
        except BackendUnavailable as exc:
            row["error"] = str(exc)
            logger.info("backend %s is not available: %s", backend, exc)
            continue
        gate = GateResult.measure(backend, sample, reference, runner.encode(sample.texts, TIMING_BATCH))
        row["gate"] = gate.to_dict()
        if gate.passed:
            runners[backend] = runner
        else:
            logger.info("backend %s fails the quality gate: %s", backend, "; ".join(gate.reasons))
    timed = sample.texts[::2][:TIMING_TEXTS]
    timings: dict[str, list[float]] = {b: [] for b in runners}
    for _ in range(TIMING_ROUNDS):
        for backend, runner in runners.items():  # interleaved: a busy moment hits every backend
            start = time.perf_counter()
            runner.encode(timed, TIMING_BATCH)
            timings[backend].append(time.perf_counter() - start)
    for backend, runner in runners.items():
        query_ms = []
        for i in range(QUERY_REPEATS):
            start = time.perf_counter()
            runner.encode([sample.texts[i]], 1)
            query_ms.append(1000 * (time.perf_counter() - start))
        rows[backend]["sentences_per_second"] = round(len(timed) / min(timings[backend]), 1)
        rows[backend]["query_ms"] = round(statistics.median(query_ms), 2)
    torch_rate = rows["torch"]["sentences_per_second"]
    for row in rows.values():
        if "sentences_per_second" in row:
            row["speedup"] = round(row["sentences_per_second"] / torch_rate, 3)
    best = max(
        (b for b in runners if b != "torch" and rows[b]["speedup"] >= MIN_SPEEDUP),
        key=lambda b: rows[b]["speedup"],
        default="torch",
    )
    choice = BackendChoice(
        backend=best,
        model=name,
        model_hash=digest,
        fingerprint=expected,
        candidates=list(rows.values()),
        measured_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    return choice, runners[best]
