"""``SEMSIM_BACKEND=auto``: measure once per machine, model and library versions, then reuse.

The first time a model is used on a machine, every candidate backend encodes the gate sample
(:mod:`semsim_pg.backends.gate`); those that pass the gate against torch fp32 are timed, in
interleaved rounds so that a shared CPU's slow moments fall on all of them, and the fastest is
chosen. The choice and its figures go to
``<data dir>/backends/<model hash>/auto-threads-<SEMSIM_THREADS or "default">.json``: one record
per threads setting, because processes of one deployment may legitimately differ there (a web
server with 2, a worker with 8) and would otherwise overwrite each other's record and measure at
nearly every start. A later process reuses its record while the rest of the fingerprint (model
hash, CPU model and flags, library versions) is unchanged, and measures again when it is not.

A measurement in which a candidate failed for a reason of the environment (a full disk, a
read-only or unwritable data dir: an OSError) is used by the process but not recorded: the next
process measures again, once the disk has room, rather than keep the slower choice for good.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import statistics
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
from semsim_pg.fsutil import atomic_write_text

__all__ = [
    "BackendChoice",
    "candidate_backends",
    "choose_backend",
    "environment_error",
    "fingerprint",
    "record_path",
]

logger = logging.getLogger(__name__)

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
    #: why this process encodes with torch fp32 instead of a measured or recorded choice (None: it
    #: does not); also why a measurement was not recorded
    fallback: str | None = None

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
        if self.fallback and not self.candidates:
            return f"{self.backend} (auto fell back: {self.fallback})"
        chosen = next((c for c in self.candidates if c["backend"] == self.backend), {})
        speed = chosen.get("speedup")
        gate = chosen.get("gate") or {}
        parts = [self.backend]
        if speed:
            parts.append(f"{speed:.2f}x torch fp32")
        if gate.get("mean_cosine") is not None:
            parts.append(f"cosine mean {gate['mean_cosine']:.4f} / worst {gate['min_cosine']:.4f}")
        parts.append(f"measured {self.measured_at}")
        if self.fallback:
            parts.append(f"not recorded: {self.fallback}")
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


def record_path(data_dir: Path, digest: str, threads: int | None) -> Path:
    """Where ``auto``'s choice for a model and a ``SEMSIM_THREADS`` setting is recorded."""
    return backends_dir(data_dir, digest) / f"auto-threads-{threads or 'default'}.json"


def environment_error(exc: BaseException) -> OSError | None:
    """The OSError (full disk, read-only or unwritable directory) behind ``exc``, if any: a failure
    of the machine's state now, not of the backend, which must not decide ``auto``'s choice for good."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


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
    path = record_path(data_dir, digest, threads)
    expected = fingerprint(digest, threads)
    choice = read_choice(path, expected)
    if choice is None:
        base.mkdir(parents=True, exist_ok=True)
        # Its own lock file: the export lock is taken inside, and flock does not nest.
        with file_lock(base / ".auto.lock"):
            choice = read_choice(path, expected)  # measured by another process while we waited
            if choice is None:
                choice, runner = _measure(name=name, digest=digest, expected=expected, make_runner=make_runner)
                if choice.fallback is None:
                    try:
                        # readable by every user the umask allows, like the exports beside it: a
                        # service user must find what `sudo semsim warmup` measured
                        atomic_write_text(path, json.dumps(choice.to_dict(), indent=2), overwrite=True)
                    except OSError as exc:
                        choice.fallback = f"cannot write {path} ({exc})"
                if choice.fallback is not None:
                    logger.warning(
                        "backend for %s on this machine: %s. The next process measures again; "
                        "fix the cause (free disk space, make SEMSIM_DATA_DIR writable) or set SEMSIM_BACKEND",
                        name,
                        choice.summary(),
                    )
                    return choice, runner
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
    unrecorded: list[str] = []
    for backend in candidate_backends()[1:]:
        row: dict[str, Any] = {"backend": backend}
        rows[backend] = row
        try:
            runner = make_runner(backend)
            vectors = runner.encode(sample.texts, TIMING_BATCH)
        except Exception as exc:
            row["error"] = str(exc)
            cause = environment_error(exc)
            if isinstance(exc, BackendUnavailable) and cause is None:
                # the backend cannot run this model here (not installed, not convertible): for good
                logger.info("backend %s is not available: %s", backend, exc)
                continue
            # a full disk, an unwritable directory, or a failure nobody foresaw: not a verdict
            # on the backend, so the choice made without it is not recorded
            row["environment"] = True
            unrecorded.append(f"{backend} failed ({type(cause or exc).__name__}: {cause or exc})")
            logger.warning(
                "SEMSIM_BACKEND=auto: backend %s failed while measuring (%s); measuring without it, and "
                "not recording the choice, so that the next process tries it again",
                backend,
                exc,
            )
            continue
        gate = GateResult.measure(backend, sample, reference, vectors)
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
        fallback="; ".join(unrecorded) or None,
    )
    return choice, runners[best]
