"""Tune a cross-encoder reranker on a collection's queries and relevance judgments.

Each training query gives its relevant documents (label 1) and its hardest guarded candidates
from the collection's index (label 0): exactly what the reranker will be asked to reorder. The
loss is sentence-transformers' BinaryCrossEntropyLoss, with the positives weighted up to balance
the negatives. On the dev queries the metric before is the first stage's own order of the
candidates; after is the best blend of the reranker's score with the first stage's
(:func:`semsim_pg.rerank.fuse`) over weights from 0 (the candidates' order) to 1 (its own order).
The weight is saved in the record and applied wherever the reranker is used, so a saved reranker
is one that measurably reorders the candidates better on this collection, never worse on dev, and
one whose best weight is 0 is refused (``rerank="auto"`` reads the record).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semsim_pg.errors import NotImproved
from semsim_pg.finetune import common
from semsim_pg.finetune.mining import DEFAULT_RATIO, guarded_negatives
from semsim_pg.finetune.records import TrainingRecord, write_record

if TYPE_CHECKING:
    from sentence_transformers.cross_encoder import CrossEncoder

    from semsim_pg.finetune.data import RetrievalTask
    from semsim_pg.finetune.mining import Candidates

__all__ = ["RerankerOptions", "build_pairs", "train_reranker"]

logger = logging.getLogger(__name__)

DEFAULT_RERANK_CANDIDATES = 30


@dataclass
class RerankerOptions:
    #: None: one epoch, or enough for :data:`~semsim_pg.finetune.common.MIN_STEPS` steps on little data
    epochs: float | None = None
    batch_size: int = 16
    #: a new one-score head on a bi-encoder's body: 40 steps at 3e-5 left it far below the first stage
    learning_rate: float = 5e-5
    max_steps: int | None = None
    #: first-stage hits the reranker reorders (and mines its negatives from)
    candidates: int = DEFAULT_RERANK_CANDIDATES
    negatives: int = 4
    #: false-negative guard: skip candidates whose cosine reaches this share of the weakest
    #: positive's (None: 0.95)
    negative_ratio: float | None = None
    max_length: int = 256
    evals_per_epoch: int = 1
    patience: int = 2
    seed: int = 0
    #: torch threads (None: every core that is not busy)
    threads: int | None = None

    def __post_init__(self) -> None:
        common.check_training(
            epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, max_steps=self.max_steps
        )


def build_pairs(
    task: RetrievalTask, candidates: Candidates, *, negatives: int, ratio: float
) -> tuple[dict[str, list[object]], dict[str, int]]:
    """(query, document, label) rows: every relevant document, then the hardest guarded candidates."""
    columns: dict[str, list[object]] = {"query": [], "document": [], "label": []}
    stats = {"positives": 0, "negatives": 0}
    for query_id, query in task.train_queries.items():
        relevant = task.train_qrels[query_id]
        for doc in sorted(relevant):
            columns["query"].append(query)
            columns["document"].append(task.corpus[doc])
            columns["label"].append(1.0)
            stats["positives"] += 1
        # Guard against the least similar positive: anything the first stage ranks as close as a
        # true answer may be an unjudged one.
        cosines = candidates.positives.get(query_id, {})
        weakest = min(cosines, key=lambda d: cosines[d]) if cosines else ""
        for doc in guarded_negatives(candidates, query_id, weakest, ratio=ratio, count=negatives):
            columns["query"].append(query)
            columns["document"].append(task.corpus[doc])
            columns["label"].append(0.0)
            stats["negatives"] += 1
    return columns, stats


def train_reranker(
    task: RetrievalTask,
    train_candidates: Candidates,
    dev_candidates: Candidates,
    *,
    model: CrossEncoder,
    base: str,
    out: Path,
    options: RerankerOptions,
    progress: bool = True,
    overwrite: bool = False,
    collection: str | None = None,
) -> TrainingRecord:
    """Train ``model`` (loaded from ``base``) on the task's queries; save it to ``out`` only if it
    reorders the dev queries' candidates better than the first stage."""
    common.check_out(out, overwrite)
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import EarlyStoppingCallback

    from semsim_pg.finetune.evaluators import RerankEvaluator

    cores = common.use_all_cores(options.threads)
    model.max_seq_length = options.max_length
    ratio = DEFAULT_RATIO if options.negative_ratio is None else options.negative_ratio
    columns, stats = build_pairs(task, train_candidates, negatives=options.negatives, ratio=ratio)
    if not stats["positives"] or not stats["negatives"]:
        raise NotImproved("No positive or no negative training pair could be built from the data; nothing was trained.")
    evaluator = RerankEvaluator(
        task.dev_queries,
        dev_candidates.ranked,
        task.corpus,
        task.dev_qrels,
        similarities=dev_candidates.ranked_cosines(),
        primary=task.metric,
    )
    before = evaluator.first_stage()
    logger.info("dev, first stage: %s", before)
    started = time.perf_counter()
    epochs, _, eval_steps = common.schedule(
        options.epochs, len(columns["query"]), options.batch_size, options.max_steps, options.evals_per_epoch
    )
    with common.staged_model_dir(out) as tmp:
        args = common.training_args(
            CrossEncoderTrainingArguments,
            tmp / "checkpoints",
            epochs=epochs,
            batch_size=options.batch_size,
            max_steps=options.max_steps,
            learning_rate=options.learning_rate,
            seed=options.seed,
            progress=progress,
            eval_steps=eval_steps,
            metric=f"eval_dev_{task.metric}",
        )
        loss = BinaryCrossEntropyLoss(
            model, pos_weight=torch.tensor(stats["negatives"] / stats["positives"], dtype=torch.float32)
        )
        with common.quiet_model_card(progress):
            trainer = CrossEncoderTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_dict(columns),
                loss=loss,
                evaluator=evaluator,
                callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience)],
            )
        state, measured = common.train_and_measure(trainer, evaluator, model, task.metric, progress, options.threads)
        seconds = time.perf_counter() - started
        weight = float(measured.get("weight", 1.0))
        after = {name: value for name, value in measured.items() if name in before}
        alone = {name.removeprefix("alone_"): v for name, v in measured.items() if name.startswith("alone_")}
        logger.info("dev, reranked (weight %.2f): %s; the reranker's own order: %s", weight, after, alone)
        record = TrainingRecord(
            kind="reranker",
            base=base,
            collection=collection,
            metric=task.metric,
            before=before,
            after=after,
            data={**task.describe(), "pairs": stats, "rerank_candidates": options.candidates},
            hyperparameters={
                "loss": "BinaryCrossEntropyLoss (positives weighted by negatives/positives)",
                "epochs": epochs,
                "batch_size": options.batch_size,
                "learning_rate": options.learning_rate,
                "max_steps": options.max_steps,
                "candidates": options.candidates,
                "negatives_per_query": options.negatives,
                "negative_ratio": ratio,
                "max_length": options.max_length,
                "eval_steps": eval_steps,
                "patience": options.patience,
                "seed": options.seed,
                "threads": cores,
            },
            steps=int(state.global_step),
            seconds=round(seconds, 1),
            out=str(out),
            versions=common.library_versions(),
            fusion={
                "weight": weight,
                "score": "(1 - weight) x first stage + weight x reranker; first stage: the similarity, or "
                "1 - rank/n where the candidates are not in similarity order",
                "alone": alone,
            },
        )
        if record.gain <= 0 or weight <= 0:
            raise NotImproved(
                f"The reranker does not beat the first stage on the dev queries at any weight ({task.metric} "
                f"{before[task.metric]:.2f} -> {alone.get(task.metric, float('nan')):.2f} by its own order, over the "
                f"top {options.candidates}); nothing was saved to {out}. Rerank stays off for this collection."
            )
        model.save_pretrained(str(tmp))
        common.drop_work_files(tmp)
        write_record(tmp, record)
    return record
