"""Evaluation: correlation and ranking metrics, and STS (semantic textual similarity) scoring.

Heavy work (models) is imported lazily by the submodules that need it; importing this package
costs only NumPy.
"""

from __future__ import annotations

from semsim_pg.evaluation.metrics import (
    accuracy_at_k,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    rankdata,
    recall_at_k,
    spearman,
)

__all__ = [
    "accuracy_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "pearson",
    "rankdata",
    "recall_at_k",
    "spearman",
]
