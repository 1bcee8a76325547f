"""FAQ evaluation: accuracy@1/@5 and MRR of :class:`~semsim_pg.faq.FAQMatcher` on labelled
queries, and the confidence threshold that reaches a target precision (``semsim eval faq``)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from semsim_pg.errors import InvalidInput
from semsim_pg.evaluation.metrics import accuracy_at_k, mrr_at_k
from semsim_pg.faq import FAQEntry, FAQMatch, FAQMatcher, FAQQuery
from semsim_pg.progress import progress_bar

if TYPE_CHECKING:
    from semsim_pg.rerank import Reranker
    from semsim_pg.store import DocumentStore

__all__ = ["FAQEvaluation", "ThresholdPoint", "evaluate_faq", "recommend_threshold", "threshold_sweep"]


@dataclass(frozen=True)
class ThresholdPoint:
    threshold: float
    #: share of all queries answered (top score >= threshold)
    answered: float
    #: share of answered queries whose top entry is right (None when none is answered)
    precision: float | None
    answered_count: int
    correct_count: int


def threshold_sweep(
    top_scores: Sequence[float], top_correct: Sequence[bool], thresholds: Iterable[float]
) -> list[ThresholdPoint]:
    """For each threshold: how many queries would be answered and how many of those correctly."""
    scores = np.asarray(top_scores, dtype=np.float64)
    correct = np.asarray(top_correct, dtype=bool)
    if scores.shape != correct.shape:
        raise InvalidInput(f"{scores.size} scores but {correct.size} correctness flags.")
    total = max(scores.size, 1)
    points = []
    for threshold in thresholds:
        answered = scores >= threshold
        n = int(answered.sum())
        right = int((answered & correct).sum())
        points.append(ThresholdPoint(round(float(threshold), 6), n / total, right / n if n else None, n, right))
    return points


def recommend_threshold(points: Sequence[ThresholdPoint], target_precision: float) -> float | None:
    """The lowest threshold whose precision among answered queries reaches the target (None: none does)."""
    reaching = [p.threshold for p in points if p.precision is not None and p.precision >= target_precision]
    return min(reaching) if reaching else None


def _grids(scores: Sequence[float]) -> tuple[list[float], list[float]]:
    """A coarse grid to print and a fine one to recommend from, over the scores' scale."""
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    if low >= 0.0 and high <= 1.0:
        return [round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)], [round(x, 3) for x in np.arange(0.0, 1.0001, 0.005)]
    return [float(x) for x in np.linspace(low, high, 21)], [float(x) for x in np.linspace(low, high, 401)]


@dataclass
class FAQEvaluation:
    """`semsim eval faq`'s result. Accuracy and MRR count queries that have an entry; the threshold
    table counts every query (one that no entry should answer is wrong whenever it is answered)."""

    queries: int
    in_scope: int
    accuracy_at_1: float
    accuracy_at_5: float
    mrr_at_10: float
    scored_by: str
    model: str
    reranker: str | None
    target_precision: float
    recommended_threshold: float | None
    #: the recommended threshold's answered share and precision
    recommended: ThresholdPoint | None
    thresholds: list[ThresholdPoint] = field(default_factory=list)
    entries: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_faq(
    store: DocumentStore,
    entries: Sequence[FAQEntry],
    queries: Sequence[FAQQuery],
    *,
    rerank: bool | str | Reranker = False,
    target_precision: float = 0.9,
    thresholds: Sequence[float] | None = None,
    collection: str | None = None,
    candidates: int | None = None,
    progress: bool | None = None,
) -> FAQEvaluation:
    """Load ``entries`` into a collection, ask every query and measure.

    Without ``collection`` a temporary one is made and dropped afterwards; a named one is kept
    (loading it again later encodes only what changed); one holding other documents than FAQ
    entries is refused (:class:`~semsim_pg.errors.NotAnFAQCollection`) with nothing written.
    """
    if not 0.0 < target_precision <= 1.0:
        raise InvalidInput(f"target_precision must be in (0, 1], got {target_precision}.")
    if not queries:
        raise InvalidInput("No queries to evaluate.")
    known = {entry.faq_id for entry in entries}
    for query in queries:
        if query.faq_id is not None and query.faq_id not in known:
            raise InvalidInput(f"Query {query.query!r} names faq_id {query.faq_id!r}, which is not among the entries.")
    name = collection or f"semsim-faq-eval-{uuid.uuid4().hex[:10]}"
    matcher = FAQMatcher(store, name)
    reranker = matcher.reranker_for(rerank)
    if reranker is not None:
        reranker.load()  # fail before encoding anything
    start = time.perf_counter()
    try:
        matcher.load(entries, replace=collection is not None, progress=progress)
        matches: list[list[FAQMatch[FAQEntry]]] = []
        batch = 256
        with progress_bar(progress, total=len(queries), desc="faq queries", unit="query") as bar:
            for offset in range(0, len(queries), batch):
                chunk = [q.query for q in queries[offset : offset + batch]]
                matches += matcher.match_many(chunk, 10, rerank=reranker or False, candidates=candidates)
                bar.update(len(chunk))
        model = store.get_collection(name).model_name
    finally:
        if collection is None:
            store.drop_collection(name)
    seconds = time.perf_counter() - start

    at1: list[float] = []
    at5: list[float] = []
    rr: list[float] = []
    top_scores: list[float] = []
    top_correct: list[bool] = []
    for query, found in zip(queries, matches, strict=True):
        ranked = [m.entry.faq_id for m in found]
        if query.faq_id is not None:
            relevant = {query.faq_id: 1.0}
            at1.append(accuracy_at_k(ranked, relevant, 1))
            at5.append(accuracy_at_k(ranked, relevant, 5))
            rr.append(mrr_at_k(ranked, relevant, 10))
        top_scores.append(found[0].score if found else -math.inf)
        top_correct.append(bool(found) and query.faq_id is not None and ranked[0] == query.faq_id)

    finite = [s for s in top_scores if math.isfinite(s)]
    coarse, fine = _grids(finite)
    table = threshold_sweep(top_scores, top_correct, thresholds if thresholds is not None else coarse)
    fine_points = threshold_sweep(top_scores, top_correct, sorted(set(fine) | {p.threshold for p in table}))
    recommended = recommend_threshold(fine_points, target_precision)
    point = next((p for p in fine_points if p.threshold == recommended), None)
    return FAQEvaluation(
        queries=len(queries),
        in_scope=len(at1),
        accuracy_at_1=float(np.mean(at1)) if at1 else 0.0,
        accuracy_at_5=float(np.mean(at5)) if at5 else 0.0,
        mrr_at_10=float(np.mean(rr)) if rr else 0.0,
        scored_by="rerank_score" if reranker is not None else "similarity",
        model=model,
        reranker=reranker.name if reranker is not None else None,
        target_precision=target_precision,
        recommended_threshold=recommended,
        recommended=point,
        thresholds=table,
        entries=len(entries),
        seconds=round(seconds, 2),
    )
