"""The quality gate a backend must pass against torch fp32 before ``auto`` may choose it.

On a fixed sample shipped with semsim (no download, the same on every machine): the cosine of each
text's two vectors (mean >= 0.985, worst >= 0.93: short sentences are where int8 strays most), and
the Spearman correlation of pair similarities with graded labels, which may not drop by more than
0.5 points (x100). The pairs are built from the bundled FAQ and sample corpus: each query with each
FAQ entry (2 its own, 1 one of the same category, 0 another), each document with each other
(1 same topic, 0 not): about 2,400 pairs, a proxy of STS-B dev's size; ``semsim bench encoders
--sts`` measures STS-B itself.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from semsim_pg.evaluation.metrics import spearman

__all__ = [
    "GATE_MAX_SPEARMAN_DROP",
    "GATE_MEAN_COSINE",
    "GATE_MIN_COSINE",
    "GateResult",
    "GateSample",
    "cosine_stats",
    "gate_sample",
]

GATE_MEAN_COSINE = 0.985
GATE_MIN_COSINE = 0.93
#: Spearman x100
GATE_MAX_SPEARMAN_DROP = 0.5

Matrix = npt.NDArray[np.float32]

# Short everyday sentences: the texts whose vectors quantisation moves most (measured: "I don't
# know." fell to 0.81 cosine under per-tensor int8).
SHORT_TEXTS = (
    "I don't know.",
    "Yes.",
    "No way!",
    "Hi!",
    "Thanks a lot.",
    "Tom laughed.",
    "Where is it?",
    "Let's go.",
    "I'm hungry.",
    "See you tomorrow.",
    "It's raining.",
    "Call me.",
    "Help!",
    "Who are you?",
    "That's fine.",
    "refund",
    "password reset",
    "opening hours",
    "cancel order",
    "shipping cost",
)


@dataclass(frozen=True)
class GateSample:
    """The texts every backend encodes, and graded pairs of them (indices into ``texts``)."""

    texts: list[str]
    pairs: list[tuple[int, int]]
    labels: list[float]


def _data_file(name: str) -> str:
    return resources.files("semsim_pg.data").joinpath(name).read_text(encoding="utf-8")


def gate_sample() -> GateSample:
    """The fixed sample (deterministic: the same texts and pairs on every machine)."""
    texts: list[str] = []
    index: dict[str, int] = {}

    def at(text: str) -> int:
        if text not in index:
            index[text] = len(texts)
            texts.append(text)
        return index[text]

    entries = list(csv.DictReader(_data_file("faq_entries.tsv").splitlines(), delimiter="\t"))
    by_id = {e["faq_id"]: e for e in entries}
    queries = list(csv.DictReader(_data_file("faq_queries.tsv").splitlines(), delimiter="\t"))
    pairs: list[tuple[int, int]] = []
    labels: list[float] = []
    # Every query against every entry, every document against every other: ~2,400 pairs, the size
    # class of STS-B dev (1,500), so that a few swapped pairs do not move Spearman by 0.5.
    for row in queries:
        own = by_id.get(row["faq_id"])
        if own is None:  # a query no entry should answer
            continue
        query = at(row["query"])
        for entry in entries:
            same = entry["faq_id"] == own["faq_id"]
            pairs.append((query, at(entry["question"])))
            labels.append(2.0 if same else 1.0 if entry["category"] == own["category"] else 0.0)
    docs = [json.loads(line) for line in _data_file("sample_corpus.jsonl").splitlines() if line.strip()]
    for i, doc in enumerate(docs):
        for other in docs[i + 1 :]:
            pairs.append((at(doc["text"]), at(other["text"])))
            labels.append(1.0 if doc["topic"] == other["topic"] else 0.0)
    for text in SHORT_TEXTS:
        at(text)
    for line in _data_file("sample_queries.txt").splitlines():
        if line.strip():
            at(line.strip())
    return GateSample(texts=texts, pairs=pairs, labels=labels)


def cosine_stats(reference: Matrix, candidate: Matrix) -> tuple[float, float, int]:
    """Mean and lowest cosine between the rows of two matrices of unit vectors, and the lowest's row."""
    cosines = np.einsum("ij,ij->i", reference.astype(np.float64), candidate.astype(np.float64))
    worst = int(np.argmin(cosines))
    return float(cosines.mean()), float(cosines[worst]), worst


def pair_spearman(vectors: Matrix, sample: GateSample) -> float:
    """Spearman (x100) between the pairs' labels and their cosine similarities."""
    left = vectors[[a for a, _ in sample.pairs]]
    right = vectors[[b for _, b in sample.pairs]]
    return 100.0 * spearman(np.einsum("ij,ij->i", left, right), sample.labels)


@dataclass
class GateResult:
    backend: str
    mean_cosine: float
    min_cosine: float
    worst_text: str
    spearman: float
    reference_spearman: float
    reasons: list[str] = field(default_factory=list)

    @property
    def spearman_drop(self) -> float:
        return self.reference_spearman - self.spearman

    @property
    def passed(self) -> bool:
        return not self.reasons

    @classmethod
    def measure(cls, backend: str, sample: GateSample, reference: Matrix, candidate: Matrix) -> GateResult:
        mean, low, worst = cosine_stats(reference, candidate)
        result = cls(
            backend=backend,
            mean_cosine=mean,
            min_cosine=low,
            worst_text=sample.texts[worst],
            spearman=pair_spearman(candidate, sample),
            reference_spearman=pair_spearman(reference, sample),
        )
        if mean < GATE_MEAN_COSINE:
            result.reasons.append(f"mean cosine to torch fp32 {mean:.4f} < {GATE_MEAN_COSINE}")
        if low < GATE_MIN_COSINE:
            result.reasons.append(f"worst cosine {low:.4f} < {GATE_MIN_COSINE} ({result.worst_text!r})")
        if result.spearman_drop > GATE_MAX_SPEARMAN_DROP:
            result.reasons.append(f"Spearman drop {result.spearman_drop:.2f} > {GATE_MAX_SPEARMAN_DROP}")
        return result

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(spearman_drop=self.spearman_drop, passed=self.passed)
        for key in ("mean_cosine", "min_cosine", "spearman", "reference_spearman", "spearman_drop"):
            data[key] = round(data[key], 5)
        return data
