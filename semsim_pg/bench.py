"""Encoder benchmark: models and backends side by side against the plain sentence-transformers
fp32 path, in one run.

For each model, the reference (``SentenceTransformer.encode`` in fp32, not through semsim) and each
backend (torch, torch-bf16, onnx, onnx-int8, auto) encode the same texts in interleaved rounds, so
that a shared machine's slow moments fall on all of them (README.md, "Performance"): sentences/s (best
round) and its ratio to the reference, one short query's latency (median) and its ratio, how close
the vectors are to the reference's (mean and lowest cosine), and, given STS pairs, Spearman x100.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import InputFileError, InvalidInput, ModelLoadError
from semsim_pg.progress import progress_bar

if TYPE_CHECKING:
    from semsim_pg.evaluation.files import SentencePair

__all__ = ["REFERENCE", "EncoderBenchmark", "benchmark_backends", "describe_machine", "load_texts", "machine_info"]

logger = logging.getLogger(__name__)

#: the row every other is compared with
REFERENCE = "sentence-transformers"
#: short queries for the latency figure (one encoded at a time, no cache)
QUERIES = ("where is my parcel", "I don't know.", "how do I reset my password", "cheap flights to Rome", "refund")


@dataclass
class EncoderBenchmark:
    """One row: a model run by one backend (or the reference), on the same texts as the others."""

    model: str
    #: ``sentence-transformers`` (the reference), or the backend that ran (``auto`` resolved)
    backend: str
    requested: str
    dimension: int
    load_seconds: float
    texts: int
    batch_size: int
    sentences_per_second: float
    query_ms: float
    speedup: float = 1.0
    query_speedup: float = 1.0
    mean_cosine: float = 1.0
    min_cosine: float = 1.0
    #: Spearman x100 on the STS pairs given (None: none given)
    sts_spearman: float | None = None
    #: seconds of each round, in order
    rounds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, digits in (("load_seconds", 3), ("sentences_per_second", 1), ("query_ms", 2), ("speedup", 3)):
            data[key] = round(data[key], digits)
        data["query_speedup"] = round(self.query_speedup, 3)
        data["rounds"] = [round(r, 3) for r in self.rounds]
        return data


#: the libraries whose versions a figure depends on (distribution names)
LIBRARIES = ("torch", "sentence-transformers", "transformers", "onnxruntime", "numpy")


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: the CPU (model, the flags that choose a backend, cores),
    the 1-minute load average (called after a run, it includes the run's own threads; a shared
    machine's figures are only comparable within one run), the threads encoding ran with, and the
    libraries' versions. Call it after the run: torch's thread count is then the one the run set."""
    from importlib.metadata import PackageNotFoundError, version

    from semsim_pg.backends.cpu import cpu_info, free_cores
    from semsim_pg.settings import get_settings

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = cpu_info()
    free, cores = free_cores()
    configured = get_settings().threads
    try:
        import torch

        torch_threads: int | None = torch.get_num_threads()
    except ImportError:
        torch_threads = None
    return {
        "cpu": cpu.model,
        "cpu_flags": sorted(cpu.flags),
        "cores": cores,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        # SEMSIM_THREADS, or (unset) the free cores each backend counts when it loads
        "threads": configured if configured is not None else free,
        "threads_from": "SEMSIM_THREADS" if configured is not None else "free cores",
        "torch_threads": torch_threads,
        "python": platform.python_version(),
        "libraries": {name: installed(name) for name in LIBRARIES},
    }


def describe_machine(machine: dict[str, Any]) -> str:
    """``machine_info()`` in one line, for a table's heading."""
    libraries = ", ".join(f"{name} {v}" for name, v in machine["libraries"].items() if v is not None)
    load = "" if machine["load_average"] is None else f", load average {machine['load_average']}"
    return (
        f"CPU: {machine['cpu']} ({machine['cores']} cores{load}); {machine['threads']} thread(s) "
        f"({machine['threads_from']}), torch {machine['torch_threads']}; Python {machine['python']}, {libraries}"
    )


def load_texts(file: str | Path | None = None, limit: int | None = None) -> list[str]:
    """The texts to encode: a .txt file (one a line), a .jsonl/.csv/.tsv document file (its text
    field), or, without a file, the sample corpus shipped with semsim."""
    if limit is not None and limit < 1:
        raise InvalidInput(f"--limit must be at least 1; received {limit}.")
    from semsim_pg.inputs import read_documents, read_lines

    if file is None:
        path = Path(str(resources.files("semsim_pg.data").joinpath("sample_corpus.jsonl")))
    else:
        path = Path(file)
    texts: Iterable[str]
    if path.suffix.lower() == ".txt":
        texts = (text for _, text in read_lines(path))
    else:
        texts = (doc.text for doc in read_documents(path))
    chosen: list[str] = []
    for text in texts:
        chosen.append(text)
        if limit is not None and len(chosen) >= limit:
            break
    if not chosen:
        raise InputFileError(f"{path}: holds no texts to encode.")
    return chosen


class _Contender:
    """Something that encodes: the plain SentenceTransformer, or a semsim Encoder with a backend."""

    def __init__(self, model: str, requested: str) -> None:
        self.requested = requested
        start = time.perf_counter()
        if requested == REFERENCE:
            from semsim_pg.encoder import _HOW_TO_GET_ONE
            from semsim_pg.loading import check_hub_model, one_line, resolve_model

            source = resolve_model(model)
            self.name = source.name
            # The same probe the encoders run: a hub name neither cached nor reachable fails at once,
            # not after the hub client's retries.
            local_only = source.local or check_hub_model(
                source.location,
                what=f"model {source.name!r}",
                organization="sentence-transformers",
                fix=_HOW_TO_GET_ONE,
            )
            from sentence_transformers import SentenceTransformer  # after the probe: a slow import

            try:
                self.st: Any = SentenceTransformer(source.location, device="cpu", local_files_only=local_only)
            except Exception as exc:  # the hub, the disk or the weights: all mean "cannot load"
                raise ModelLoadError(
                    f"Cannot load model {source.name!r} from {source.location}: {one_line(exc)}."
                ) from exc
            self.backend = REFERENCE
            self.dimension = int(self.st.get_embedding_dimension() or 0)
        else:
            from semsim_pg.encoder import Encoder

            self.encoder = Encoder(model, cache_size=0, backend=requested, device="cpu")
            self.name = self.encoder.name
            self.backend = self.encoder.backend_name  # loads (and for onnx, exports) the backend
            self.dimension = self.encoder.dimension
        self.load_seconds = time.perf_counter() - start

    def encode(self, texts: Sequence[str], batch_size: int) -> npt.NDArray[np.float32]:
        if self.requested == REFERENCE:
            return np.asarray(
                self.st.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True),
                dtype=np.float32,
            )
        return self.encoder.encode(texts, batch_size=batch_size, show_progress_bar=False)


def benchmark_backends(
    model: str,
    backends: Sequence[str],
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    rounds: int = 3,
    query_repeats: int = 20,
    sts_pairs: Sequence[SentencePair] | None = None,
    progress: bool | None = None,
) -> list[EncoderBenchmark]:
    """The reference and each backend of ``model`` on the same texts; the reference's row first."""
    from semsim_pg.backends.gate import cosine_stats
    from semsim_pg.settings import BACKENDS

    if not texts:
        raise InvalidInput("The benchmark needs at least one text.")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InvalidInput(f"Unknown backend {unknown[0]!r}: use one of {', '.join(BACKENDS)}.")
    if batch_size < 1 or rounds < 1 or query_repeats < 1:
        raise InvalidInput(
            f"batch size, rounds and query repeats must be at least 1; received {batch_size}, {rounds}, {query_repeats}."
        )
    contenders = [_Contender(model, requested) for requested in (REFERENCE, *backends)]
    for contender in contenders:  # the first pass allocates and picks kernels: keep it out of the rates
        contender.encode(texts[: min(len(texts), 8)], batch_size)
    times: list[list[float]] = [[] for _ in contenders]
    vectors: list[npt.NDArray[np.float32]] = [np.zeros(0, dtype=np.float32)] * len(contenders)
    with progress_bar(progress, total=rounds * len(contenders), desc="rounds", unit="pass", logger=logger) as bar:
        for _ in range(rounds):
            for i, contender in enumerate(contenders):  # interleaved: a busy moment hits every contender
                start = time.perf_counter()
                vectors[i] = contender.encode(texts, batch_size)
                times[i].append(time.perf_counter() - start)
                bar.update()
    query_ms: list[list[float]] = [[] for _ in contenders]
    for n in range(query_repeats):
        for i, contender in enumerate(contenders):
            start = time.perf_counter()
            contender.encode([QUERIES[n % len(QUERIES)]], 1)
            query_ms[i].append(1000 * (time.perf_counter() - start))
    results = []
    for i, contender in enumerate(contenders):
        mean_cosine, min_cosine, _ = cosine_stats(vectors[0], vectors[i])
        rate = len(texts) / min(times[i])
        results.append(
            EncoderBenchmark(
                model=contender.name,
                backend=contender.backend,
                requested=contender.requested,
                dimension=contender.dimension,
                load_seconds=contender.load_seconds,
                texts=len(texts),
                batch_size=batch_size,
                sentences_per_second=rate,
                query_ms=statistics.median(query_ms[i]),
                mean_cosine=mean_cosine,
                min_cosine=min_cosine,
                sts_spearman=_sts_spearman(contender, sts_pairs, batch_size) if sts_pairs else None,
                rounds=times[i],
            )
        )
    reference = results[0]
    for row in results:
        row.speedup = row.sentences_per_second / reference.sentences_per_second
        row.query_speedup = reference.query_ms / row.query_ms
        logger.info("%s %s: %.1f sentences/s (%.2fx)", row.model, row.backend, row.sentences_per_second, row.speedup)
    return results


def _sts_spearman(contender: _Contender, pairs: Sequence[SentencePair], batch_size: int) -> float:
    from semsim_pg.evaluation.metrics import spearman

    left = contender.encode([p.sentence1 for p in pairs], batch_size)
    right = contender.encode([p.sentence2 for p in pairs], batch_size)
    return 100.0 * spearman(
        np.einsum("ij,ij->i", left, right), [p.score or 0.0 for p in pairs]
    )  # read_sts_pairs: every pair has a score
