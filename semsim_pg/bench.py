"""Encoder benchmark: what a model costs before you commit a collection to it.

For each model: its dimension (storage and index size grow with it), how long it takes to load,
and how many sentences per second it encodes at a few batch sizes, all on the same texts so the
figures compare. Machines are often shared: compare models within one run, not across runs
(README.md, "Performance"), and use ``repeats`` to take the best of several passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from semsim_pg.errors import InputFileError, InvalidInput

__all__ = ["DEFAULT_BATCH_SIZES", "EncoderBenchmark", "benchmark_encoder", "benchmark_encoders", "load_texts"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (16, 64, 128)


@dataclass
class EncoderBenchmark:
    model: str
    dimension: int
    max_seq_length: int
    precision: str
    load_seconds: float
    texts: int
    #: batch size -> sentences per second (best of the repeats)
    sentences_per_second: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sentences_per_second"] = {str(k): round(v, 1) for k, v in self.sentences_per_second.items()}
        data["load_seconds"] = round(self.load_seconds, 3)
        return data


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


def benchmark_encoder(
    model: str, texts: Sequence[str], batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, *, repeats: int = 1
) -> EncoderBenchmark:
    """Load ``model`` afresh (not the process-wide shared encoder: its load time is the point) and
    time :meth:`Encoder.encode` over ``texts`` at each batch size."""
    from semsim_pg.encoder import Encoder

    if not texts:
        raise InvalidInput("The benchmark needs at least one text.")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise InvalidInput(f"Batch sizes must be positive integers; received {list(batch_sizes)}.")
    if repeats < 1:
        raise InvalidInput(f"repeats must be at least 1; received {repeats}.")
    # Import the library first: its (multi-second) import is paid once per process, not per model,
    # and would otherwise be charged to whichever model happens to load first.
    import sentence_transformers  # noqa: F401

    encoder = Encoder(model, cache_size=0)
    start = time.perf_counter()
    encoder.model  # noqa: B018 - loading is what is timed
    load_seconds = time.perf_counter() - start
    # Warm-up: the first forward pass allocates and picks kernels; keep it out of the rates.
    encoder.encode(list(texts[: min(len(texts), 8)]), show_progress_bar=False)
    result = EncoderBenchmark(
        model=encoder.name,
        dimension=encoder.dimension,
        max_seq_length=encoder.max_seq_length,
        precision=encoder.precision,
        load_seconds=load_seconds,
        texts=len(texts),
    )
    for batch_size in batch_sizes:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            encoder.encode(texts, batch_size=batch_size, show_progress_bar=False)
            best = min(best, time.perf_counter() - t0)
        result.sentences_per_second[batch_size] = len(texts) / best
        logger.info("%s: batch %d: %.1f sentences/s", encoder.name, batch_size, result.sentences_per_second[batch_size])
    return result


def benchmark_encoders(
    models: Sequence[str],
    texts: Sequence[str],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    repeats: int = 1,
    progress: bool = False,
) -> list[EncoderBenchmark]:
    """:func:`benchmark_encoder` for each model, one after the other, on the same texts."""
    from tqdm import tqdm

    results = []
    for model in tqdm(models, desc="models", unit="model", disable=not progress or len(models) < 2):
        results.append(benchmark_encoder(model, texts, batch_sizes, repeats=repeats))
    return results
