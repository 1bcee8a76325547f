"""Correlation and ranking metrics, in plain NumPy so that evaluation needs no SciPy.

Conventions (the BEIR / pytrec_eval ones, so figures compare with published tables):

* ``relevant`` maps a document id to its graded relevance; a grade <= 0 means "judged, not
  relevant" and counts as irrelevant everywhere.
* ``ranked_ids`` is the system's ranking, best first. A repeated id counts once, at its first
  position: a ranking cannot earn credit twice for the same document.
* nDCG uses linear gain (``rel / log2(rank + 1)``), as pytrec_eval's ``ndcg_cut`` does.
* A query without any relevant document has no defined recall or nDCG: the functions raise
  :class:`~semsim_pg.errors.InvalidInput` rather than return a 0 that would silently drag a mean
  down. Callers skip such queries (BEIR does the same).
* Every function returns a plain ``float`` in 0..1 (x100 is the caller's choice).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from semsim_pg.errors import InvalidInput

__all__ = [
    "accuracy_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "pearson",
    "rankdata",
    "recall_at_k",
    "spearman",
]


def _pair(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InvalidInput(f"Correlation needs two sequences of the same length; received {a.size} and {b.size}.")
    if a.size < 2:
        raise InvalidInput(f"Correlation needs at least 2 pairs; received {a.size}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInput("Correlation received a NaN or infinite value; clean the scores first.")
    return a, b


#: a spread below this share of the largest value is float rounding, not a ranking: the cosines
#: of texts paired with themselves (0.99999994 against 1.0000001) correlated at -0.42 with the gold
NOISE = 1e-6


def _constant(a: NDArray[np.float64]) -> bool:
    """Constant, or spread only by float rounding (float32 scores carry ~1e-7 of noise)."""
    return float(np.ptp(a)) <= NOISE * max(1.0, float(np.abs(a).max()))


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson's r of two equally long score sequences.

    Returns NaN when either sequence is constant (the correlation is undefined), like SciPy, and
    when it differs only by float rounding (:data:`NOISE`).
    """
    a, b = _pair(x, y)
    if _constant(a) or _constant(b):
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if denominator == 0.0:
        return float("nan")
    # Clip: rounding can push a perfect correlation a hair past 1.
    return float(min(1.0, max(-1.0, float(np.dot(a, b)) / denominator)))


def rankdata(values: ArrayLike) -> NDArray[np.float64]:
    """1-based ranks, ties sharing their average rank (SciPy's ``rankdata(method="average")``)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_values = a[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], a.size]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho: Pearson's r of the ranks, ties averaged (the STS convention); NaN as
    :func:`pearson` for a sequence constant but for float rounding (its ranks would be noise)."""
    a, b = _pair(x, y)
    if _constant(a) or _constant(b):
        return float("nan")
    return pearson(rankdata(a), rankdata(b))


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a positive integer; received {k!r}.")


def _top_k(ranked_ids: Iterable[str], k: int) -> list[str]:
    seen: set[str] = set()
    top: list[str] = []
    for doc_id in ranked_ids:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        top.append(doc_id)
        if len(top) == k:
            break
    return top


def _positives(relevant: Mapping[str, float]) -> dict[str, float]:
    positives = {doc_id: float(grade) for doc_id, grade in relevant.items() if grade > 0}
    if not positives:
        raise InvalidInput(
            "This query has no relevant document (no grade > 0) so the metric is undefined; "
            f"received {len(relevant)} judgments. Skip queries without relevant documents."
        )
    return positives


def ndcg_at_k(ranked_ids: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """Normalised discounted cumulative gain of the first k results, graded linear gain."""
    _check_k(k)
    positives = _positives(relevant)
    dcg = sum(positives.get(doc_id, 0.0) / math.log2(rank + 2) for rank, doc_id in enumerate(_top_k(ranked_ids, k)))
    ideal = sorted(positives.values(), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return float(dcg / idcg)


def mrr_at_k(ranked_ids: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """Reciprocal rank of the first relevant result within the first k, 0 when there is none."""
    _check_k(k)
    positives = _positives(relevant)
    for rank, doc_id in enumerate(_top_k(ranked_ids, k), start=1):
        if doc_id in positives:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked_ids: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """Share of the relevant documents found in the first k results."""
    _check_k(k)
    positives = _positives(relevant)
    found = sum(1 for doc_id in _top_k(ranked_ids, k) if doc_id in positives)
    return found / len(positives)


def accuracy_at_k(ranked_ids: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """1.0 when at least one relevant document is in the first k results, else 0.0 (hit rate).

    The mean over queries is "accuracy@k" in sentence-transformers' InformationRetrievalEvaluator
    and the FAQ-matching success rate (one correct entry per question).
    """
    _check_k(k)
    positives = _positives(relevant)
    return 1.0 if any(doc_id in positives for doc_id in _top_k(ranked_ids, k)) else 0.0
