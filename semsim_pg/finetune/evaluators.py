"""Dev metrics measured before, during and after training, with semsim's own metric functions
(the same as ``semsim eval``), wrapped as sentence-transformers evaluators so the trainer can log
them, keep the best checkpoint and stop early.

* :class:`RetrievalEvaluator` (bi-encoder): dev queries against the corpus, exact cosine (one
  matrix product, offline): accuracy@1 (for label groups: 1-NN accuracy), nDCG@10, MRR@10.
* :class:`RerankEvaluator` (cross-encoder): each dev query's first-stage candidates reordered by
  the model's scores blended with the first stage's (:func:`semsim_pg.rerank.fuse`) at each weight
  of :data:`WEIGHTS`; the metrics of the best weight are reported (0, the candidates' own order,
  is among them), with the weight and the reranker's own order's metrics beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from semsim_pg.evaluation.metrics import accuracy_at_k, mrr_at_k, ndcg_at_k
from semsim_pg.rerank import first_stage_scores, fused_order

__all__ = ["WEIGHTS", "RerankEvaluator", "RetrievalEvaluator", "ranking_metrics"]

#: the metrics every evaluator reports, x100 like the rest of ``semsim finetune``
METRICS = ("accuracy@1", "ndcg@10", "mrr@10")
#: the reranker's share of the score tried on dev, from 0 (the first stage's order) to 1 (its own)
WEIGHTS = tuple(round(i / 20, 2) for i in range(21))


def ranking_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> dict[str, float]:
    """Mean accuracy@1, nDCG@10 and MRR@10 (x100) of ranked ids against sets of relevant ids."""
    judged = [dict.fromkeys(r, 1.0) for r in relevant]
    pairs = list(zip(ranked, judged, strict=True))
    return {
        "accuracy@1": 100 * float(np.mean([accuracy_at_k(list(r), j, 1) for r, j in pairs])),
        "ndcg@10": 100 * float(np.mean([ndcg_at_k(list(r), j, 10) for r, j in pairs])),
        "mrr@10": 100 * float(np.mean([mrr_at_k(list(r), j, 10) for r, j in pairs])),
    }


class RetrievalEvaluator(BaseEvaluator):
    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        qrels: Mapping[str, set[str]],
        *,
        primary: str,
        name: str = "dev",
        batch_size: int = 64,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.query_ids = list(queries)
        self.query_texts = [queries[q] for q in self.query_ids]
        self.corpus_ids = list(corpus)
        self.corpus_texts = [corpus[d] for d in self.corpus_ids]
        self.relevant = [qrels[q] for q in self.query_ids]
        self.name = name
        self.batch_size = batch_size
        self.primary = primary
        self.primary_metric = primary

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1
    ) -> dict[str, float]:
        def encode(texts: list[str]) -> np.ndarray:
            return np.asarray(
                model.encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )

        return self.score(encode(self.query_texts), encode(self.corpus_texts))

    def score(self, queries: np.ndarray, corpus: np.ndarray) -> dict[str, float]:
        """The metrics for given unit vectors (queries and corpus in this evaluator's order): the
        base model's are the collection's stored vectors, so "before" costs no encoding."""
        ranked: list[list[str]] = []
        # Blocks of queries keep the score matrix small for a large corpus.
        for start in range(0, len(queries), 256):
            scores = queries[start : start + 256] @ corpus.T
            top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
            ranked += [[self.corpus_ids[j] for j in row] for row in top]
        metrics = ranking_metrics(ranked, self.relevant)
        self.primary_metric = self.primary  # prefix_name_to_metrics prefixes it again
        return dict(self.prefix_name_to_metrics(metrics, self.name))


class RerankEvaluator(BaseEvaluator):
    def __init__(
        self,
        queries: Mapping[str, str],
        candidates: Mapping[str, Sequence[str]],
        corpus: Mapping[str, str],
        qrels: Mapping[str, set[str]],
        *,
        similarities: Mapping[str, Sequence[float]] | None = None,
        primary: str = "ndcg@10",
        name: str = "dev",
        batch_size: int = 32,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.query_ids = [q for q in queries if candidates.get(q)]
        self.queries = dict(queries)
        self.candidates = {q: list(candidates[q]) for q in self.query_ids}
        # The first stage's score of each candidate, as the reranker sees it when it is used.
        given = similarities or {}
        self.first = {
            q: first_stage_scores(list(given[q]) if q in given else [None] * len(self.candidates[q]))
            for q in self.query_ids
        }
        self.corpus = corpus
        self.relevant = [qrels[q] for q in self.query_ids]
        self.name = name
        self.batch_size = batch_size
        self.primary = primary
        self.primary_metric = primary

    def first_stage(self) -> dict[str, float]:
        """The metrics of the candidates in the order the index returned them."""
        return ranking_metrics([self.candidates[q] for q in self.query_ids], self.relevant)

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1
    ) -> dict[str, float]:
        pairs = [(self.queries[q], self.corpus[d]) for q in self.query_ids for d in self.candidates[q]]
        scores = np.asarray(
            model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        ).reshape(-1)
        blocks: list[np.ndarray] = []
        start = 0
        for q in self.query_ids:
            blocks.append(scores[start : start + len(self.candidates[q])])
            start += len(self.candidates[q])
        by_weight = {weight: self.at_weight(blocks, weight) for weight in WEIGHTS}
        # The best weight; on a tie the smaller one, the nearer the candidates' own order.
        weight = max(WEIGHTS, key=lambda w: (by_weight[w][self.primary], -w))
        metrics = {
            **by_weight[weight],
            "weight": weight,
            **{f"alone_{name}": value for name, value in by_weight[1.0].items()},
        }
        self.primary_metric = self.primary  # prefix_name_to_metrics prefixes it again
        return dict(self.prefix_name_to_metrics(metrics, self.name))

    def at_weight(self, scores: Sequence[np.ndarray], weight: float) -> dict[str, float]:
        """The metrics with each query's candidates ordered by the blended score at ``weight``."""
        ranked = [
            [self.candidates[q][i] for i in fused_order(self.first[q], block, weight)]
            for q, block in zip(self.query_ids, scores, strict=True)
        ]
        return ranking_metrics(ranked, self.relevant)
