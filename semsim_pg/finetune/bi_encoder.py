"""Tune the bi-encoder on a collection's own data: label groups, FAQ phrasings or query/qrels files.

Rows are (anchor, positive, hard negative) triples for sentence-transformers'
MultipleNegativesRankingLoss; the hard negative comes from the collection's index
(:mod:`semsim_pg.finetune.mining`). The dev metric is measured before training, during it (the
best checkpoint is kept and training stops when it stops improving), and the model is saved only
when it beats the base on the dev part, together with its record.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsim_pg.errors import NotImproved
from semsim_pg.finetune import common
from semsim_pg.finetune.mining import (
    DEFAULT_CANDIDATES,
    DEFAULT_RATIO,
    guarded_negatives,
    label_negatives,
    random_negative,
)
from semsim_pg.finetune.records import TrainingRecord, write_record

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from semsim_pg.finetune.data import CollectionTexts, RetrievalTask
    from semsim_pg.finetune.mining import Candidates

__all__ = ["FAQ_LEARNING_RATE", "LEARNING_RATE", "BiEncoderOptions", "build_triples", "train_bi_encoder"]

logger = logging.getLogger(__name__)

#: the default peak learning rate for labels and judged queries. Measured (README, fine-tuning):
#: BANKING77 at 2e-5 moved the unseen texts' 1-NN accuracy less per step than at 5e-5
LEARNING_RATE = 5e-5
#: ... and for an FAQ's phrasings: a few dozen rows, 20 steps; at 2e-5 the shipped FAQ's dev
#: accuracy did not move (and the command refused), at 1e-4 it rose
FAQ_LEARNING_RATE = 1e-4


@dataclass
class BiEncoderOptions:
    #: None: one epoch, or enough for :data:`~semsim_pg.finetune.common.MIN_STEPS` steps on little data
    epochs: float | None = None
    batch_size: int = 32
    #: None: :data:`LEARNING_RATE`, or :data:`FAQ_LEARNING_RATE` for an FAQ
    learning_rate: float | None = None
    max_steps: int | None = None
    candidates: int = DEFAULT_CANDIDATES
    #: false-negative guard (see :mod:`semsim_pg.finetune.mining`). None: 0.95 of the positive's
    #: cosine for judged queries; for label groups only "another label"
    negative_ratio: float | None = None
    #: dev evaluations per epoch (the best one is kept; two without gain stop training)
    evals_per_epoch: int = 1
    patience: int = 2
    seed: int = 0
    #: torch threads (None: every core that is not busy)
    threads: int | None = None
    #: train on a seeded sample of this many anchors (None: all)
    max_anchors: int | None = None

    def __post_init__(self) -> None:
        common.check_training(
            epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, max_steps=self.max_steps
        )


def build_triples(
    task: RetrievalTask, candidates: Candidates, *, ratio: float | None, seed: int
) -> tuple[dict[str, list[str]], list[frozenset[str]], dict[str, int]]:
    """(anchor, positive, negative) columns, each row's keys for the batch sampler, and counts.

    Label groups: one row per training document with a random other document of its label and
    the nearest candidate of another label. Qrels: one row per (query, relevant document) with the
    nearest candidate under the score guard.
    """
    rng = random.Random(seed)
    pool = list(task.corpus)
    columns: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    keys: list[frozenset[str]] = []
    stats = {"rows": 0, "hard_negatives": 0, "random_negatives": 0, "guard_skipped": 0}
    for query_id, query in task.train_queries.items():
        relevant = task.train_qrels[query_id]
        positives = sorted(relevant)
        if task.labels:
            positives = [rng.choice(positives)]
        for positive in positives:
            if task.labels:
                label = task.labels.get(query_id) or task.labels[positive]
                hard = label_negatives(candidates, query_id, task.labels, label, ratio=ratio)
            else:
                hard = guarded_negatives(
                    candidates, query_id, positive, ratio=DEFAULT_RATIO if ratio is None else ratio
                )
            found = len(candidates.negatives.get(query_id, []))
            if hard:
                negative = hard[0]
                stats["hard_negatives"] += 1
                # How many nearer candidates the guard passed over for this row.
                stats["guard_skipped"] += [doc for doc, _ in candidates.negatives[query_id]].index(negative)
            else:
                stats["guard_skipped"] += found
                fallback = random_negative(rng, pool, relevant | {query_id})
                if fallback is None:
                    continue
                negative = fallback
                stats["random_negatives"] += 1
            columns["anchor"].append(query)
            columns["positive"].append(task.corpus[positive])
            columns["negative"].append(task.corpus[negative])
            if task.labels:
                keys.append(frozenset({f"label:{label}", f"label:{task.labels[negative]}"}))
            else:
                keys.append(frozenset({f"q:{query_id}", f"d:{negative}", *(f"d:{d}" for d in relevant)}))
            stats["rows"] += 1
    return columns, keys, stats


def train_bi_encoder(
    task: RetrievalTask,
    candidates: Candidates,
    *,
    model: SentenceTransformer,
    base: str,
    out: Path,
    options: BiEncoderOptions,
    progress: bool = True,
    overwrite: bool = False,
    collection: str | None = None,
    stored: CollectionTexts | None = None,
) -> TrainingRecord:
    """Train ``model`` (loaded from ``base``) on the task's training part; save it to ``out`` only
    if the dev metric rose."""
    common.check_out(out, overwrite)
    from datasets import Dataset
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers import EarlyStoppingCallback

    from semsim_pg.finetune.evaluators import RetrievalEvaluator
    from semsim_pg.finetune.sampler import disjoint_keys_sampler

    cores = common.use_all_cores(options.threads)
    learning_rate = options.learning_rate
    if learning_rate is None:
        learning_rate = FAQ_LEARNING_RATE if task.kind == "faq" else LEARNING_RATE
    columns, keys, stats = build_triples(task, candidates, ratio=options.negative_ratio, seed=options.seed)
    if not columns["anchor"]:
        raise NotImproved("No training rows could be built from the data; nothing was trained.")
    evaluator = RetrievalEvaluator(task.dev_queries, task.corpus, task.dev_qrels, primary=task.metric)
    started = time.perf_counter()
    before = common.plain_metrics(_before(evaluator, model, base, stored))
    logger.info("dev before: %s", before)
    epochs, _, eval_steps = common.schedule(
        options.epochs, len(columns["anchor"]), options.batch_size, options.max_steps, options.evals_per_epoch
    )
    with common.staged_model_dir(out) as tmp:
        args = common.training_args(
            SentenceTransformerTrainingArguments,
            tmp / "checkpoints",
            epochs=epochs,
            batch_size=options.batch_size,
            max_steps=options.max_steps,
            learning_rate=learning_rate,
            seed=options.seed,
            progress=progress,
            eval_steps=eval_steps,
            metric=f"eval_dev_{task.metric}",
            batch_sampler=disjoint_keys_sampler(keys),
        )
        with common.quiet_model_card(progress):
            trainer = SentenceTransformerTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_dict(columns),
                loss=MultipleNegativesRankingLoss(model),
                evaluator=evaluator,
                callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience)],
            )
        state, after = common.train_and_measure(trainer, evaluator, model, task.metric, progress, options.threads)
        seconds = time.perf_counter() - started
        logger.info("dev after: %s", after)
        record = TrainingRecord(
            kind="bi-encoder",
            base=base,
            collection=collection,
            metric=task.metric,
            before=before,
            after=after,
            data={**task.describe(), "mining": stats},
            hyperparameters={
                "loss": "MultipleNegativesRankingLoss (one mined hard negative a row)",
                "epochs": epochs,
                "batch_size": options.batch_size,
                "learning_rate": learning_rate,
                "max_steps": options.max_steps,
                "candidates": options.candidates,
                "negative_ratio": options.negative_ratio,
                "guard": "another label"
                if task.labels and options.negative_ratio is None
                else "another label, below negative_ratio x the nearest positive"
                if task.labels
                else "below negative_ratio x the positive",
                "eval_steps": eval_steps,
                "patience": options.patience,
                "seed": options.seed,
                "threads": cores,
                "max_anchors": options.max_anchors,
            },
            steps=int(state.global_step),
            seconds=round(seconds, 1),
            out=str(out),
            versions=common.library_versions(),
        )
        common.refuse_unless_better(record)
        model.save(str(tmp))
        common.drop_work_files(tmp)
        write_record(tmp, record)
    return record


def _before(evaluator: Any, model: Any, base: str, vectors: CollectionTexts | None) -> dict[str, float]:
    """The base model's dev metrics; from the collection's stored vectors when they are the base
    model's own (the same numbers, without encoding the corpus again)."""
    if vectors is None or vectors.model_name != _canonical(base):
        return dict(evaluator(model))
    corpus = vectors.matrix(evaluator.corpus_ids)
    if corpus is None:
        return dict(evaluator(model))
    queries = vectors.matrix(evaluator.query_ids)
    if queries is None:  # queries from a file: encode them (a few hundred texts), not the corpus
        queries = np.asarray(
            model.encode(
                evaluator.query_texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        )
    return dict(evaluator.score(queries, corpus))


def _canonical(model: str) -> str:
    from semsim_pg.loading import resolve_model

    return resolve_model(model).name
