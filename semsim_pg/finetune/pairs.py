"""Fine-tuning a bi-encoder or a cross-encoder on sentence pairs, with sentence-transformers' trainers.

* Scored pairs (sentence1, sentence2, score) train a bi-encoder with ``CosineSimilarityLoss``
  (the cosine of the two vectors is pulled towards the score rescaled to 0..1).
* Unscored (query, positive) pairs train it with ``MultipleNegativesRankingLoss``: the other
  positives of the batch are the negatives, so batches never hold the same text twice.
* A cross-encoder learns the rescaled score by regression on its single logit
  (``BinaryCrossEntropyLoss`` with soft 0..1 labels, the loss of sentence-transformers' STS-B
  cross-encoder recipe), so ``predict`` returns a 0..1 similarity through its sigmoid.

The dev metrics are measured before and after training with the same code as ``semsim eval sts``;
as from a collection, a model whose deciding dev metric (Spearman of scored pairs, MRR@10 of
(query, positive) pairs) did not rise is not saved (:class:`~semsim_pg.errors.NotImproved`), and
a saved one carries its record (``semsim-finetune.json``). The model is saved to a temporary
directory beside ``out`` and renamed into place only once it is complete, so an interrupted run
never leaves a half model where a loader would find it.
Training needs the ``datasets`` and ``accelerate`` packages (sentence-transformers' trainers do).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from semsim_pg.errors import InputFileError, InvalidInput
from semsim_pg.evaluation.files import SentencePair, read_pairs, score_range
from semsim_pg.evaluation.metrics import accuracy_at_k, mrr_at_k, pearson, spearman
from semsim_pg.finetune import common
from semsim_pg.finetune.records import TrainingRecord, write_record

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

__all__ = ["LOSSES", "FinetuneResult", "finetune_bi_encoder", "finetune_cross_encoder"]

logger = logging.getLogger(__name__)

LOSSES = ("cosine", "mnrl")


@dataclass
class FinetuneResult:
    kind: str  # "bi-encoder" or "cross-encoder"
    base: str
    out: str
    loss: str
    train_pairs: int
    dev_pairs: int
    epochs: float
    steps: int
    seconds: float
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    #: the dev metric that decides whether the model is saved (it must rise)
    metric: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_pairs(path: str | Path, role: str) -> list[SentencePair]:
    pairs = read_pairs(path)
    logger.info("%s: %d pairs from %s", role, len(pairs), path)
    return pairs


# bi-encoder ---------------------------------------------------------------------------------
def bi_encoder_dev_metrics(model: SentenceTransformer, dev: Sequence[SentencePair]) -> dict[str, float]:
    """Spearman/Pearson x100 of cosine for scored dev pairs; for (query, positive) pairs, how often a
    query's own positive is the nearest of all dev positives (accuracy@1, MRR@10, x100)."""
    from semsim_pg.evaluation.sts import bi_encoder_scores

    def encode(texts: Sequence[str]) -> NDArray[np.float32]:
        return np.asarray(model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True))

    if dev[0].score is not None:
        gold = np.array([p.score for p in dev], dtype=np.float64)
        cosine = bi_encoder_scores(encode, dev)["cosine"]
        return {"spearman_cosine": 100 * spearman(cosine, gold), "pearson_cosine": 100 * pearson(cosine, gold)}
    queries = encode([p.sentence1 for p in dev])
    positives = list(dict.fromkeys(p.sentence2 for p in dev))
    corpus = encode(positives)
    # An offline evaluation over a few thousand vectors: one matrix product, not a row loop.
    top = np.argsort(-(queries @ corpus.T), axis=1)[:, :10]
    acc, mrr = [], []
    for pair, row in zip(dev, top, strict=True):
        ranked = [positives[j] for j in row]
        acc.append(accuracy_at_k(ranked, {pair.sentence2: 1.0}, 1))
        mrr.append(mrr_at_k(ranked, {pair.sentence2: 1.0}, 10))
    return {"accuracy@1": 100 * float(np.mean(acc)), "mrr@10": 100 * float(np.mean(mrr))}


def finetune_bi_encoder(
    train: str | Path,
    dev: str | Path,
    base: str,
    out: str | Path,
    *,
    loss: str | None = None,
    epochs: float = 1,
    batch_size: int = 16,
    max_steps: int | None = None,
    learning_rate: float = 2e-5,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> FinetuneResult:
    """Train ``base`` on the pairs of ``train`` and save it to ``out`` (loadable as ``Encoder(out)``).

    ``loss`` defaults to ``cosine`` when the training pairs are scored and ``mnrl`` when not.
    """
    common.check_training(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_steps=max_steps)
    out = Path(out).expanduser().resolve()
    train_pairs, dev_pairs = _load_pairs(train, "train"), _load_pairs(dev, "dev")
    scored = train_pairs[0].score is not None
    loss = loss or ("cosine" if scored else "mnrl")
    if loss not in LOSSES:
        raise InvalidInput(f"Unknown loss {loss!r}: use one of {', '.join(LOSSES)}.")
    if loss == "cosine" and not scored:
        raise InputFileError(
            f"{train}: the cosine loss needs scored pairs (sentence1, sentence2, score); these pairs have no score. "
            "Use --loss mnrl for (query, positive) pairs."
        )
    if loss == "mnrl" and batch_size < 2:
        raise InvalidInput(f"--batch-size must be at least 2 for mnrl (in-batch negatives); received {batch_size}.")
    common.check_out(out, overwrite)
    common.require_training()

    from datasets import Dataset
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    model = common.load_bi_encoder(base)
    before = bi_encoder_dev_metrics(model, dev_pairs)
    logger.info("dev before: %s", before)

    columns: dict[str, list[Any]] = {
        "sentence1": [p.sentence1 for p in train_pairs],
        "sentence2": [p.sentence2 for p in train_pairs],
    }
    if loss == "cosine":
        low, high = score_range(train_pairs, train)
        columns["score"] = [(p.score - low) / (high - low) for p in train_pairs if p.score is not None]
        loss_fn: Any = CosineSimilarityLoss(model)
        sampler = BatchSamplers.BATCH_SAMPLER
    else:
        # Only (anchor, positive) are used, whatever score column the file has.
        loss_fn = MultipleNegativesRankingLoss(model)
        sampler = BatchSamplers.NO_DUPLICATES
    start = time.perf_counter()
    with common.staged_model_dir(out) as tmp:
        args = common.training_args(
            SentenceTransformerTrainingArguments,
            tmp / "checkpoints",
            epochs=epochs,
            batch_size=batch_size,
            max_steps=max_steps,
            learning_rate=learning_rate,
            seed=seed,
            progress=progress,
            batch_sampler=sampler,
        )
        with common.quiet_model_card(progress):
            trainer = SentenceTransformerTrainer(
                model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss_fn
            )
        state = common.progress_callbacks(trainer, progress, lambda logs: None).train()
        result = FinetuneResult(
            "bi-encoder",
            base,
            str(out),
            loss,
            len(train_pairs),
            len(dev_pairs),
            float(epochs),
            int(state.global_step),
            time.perf_counter() - start,
            before,
            bi_encoder_dev_metrics(model, dev_pairs),
            "spearman_cosine" if dev_pairs[0].score is not None else "mrr@10",
        )
        _save_if_better(result, model.save, tmp, train, dev, batch_size, learning_rate, max_steps, seed)
    return result


# cross-encoder ------------------------------------------------------------------------------
def cross_encoder_dev_metrics(model: CrossEncoder, dev: Sequence[SentencePair]) -> dict[str, float]:
    """Spearman/Pearson x100 of the cross-encoder's scores against the gold scores."""
    from semsim_pg.evaluation.sts import cross_encoder_scores

    gold = np.array([p.score for p in dev], dtype=np.float64)
    scores = cross_encoder_scores(model, dev)
    return {"spearman": 100 * spearman(scores, gold), "pearson": 100 * pearson(scores, gold)}


def finetune_cross_encoder(
    train: str | Path,
    dev: str | Path,
    base: str,
    out: str | Path,
    *,
    loss: str | None = None,
    epochs: float = 1,
    batch_size: int = 16,
    max_steps: int | None = None,
    learning_rate: float = 2e-5,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> FinetuneResult:
    """Train a cross-encoder from ``base`` to predict the rescaled scores of ``train``.

    ``base`` is a saved CrossEncoder, or a plain transformer (such as all-MiniLM-L6-v2): its body
    loads and a new one-logit head is added.
    """
    common.check_training(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_steps=max_steps)
    out = Path(out).expanduser().resolve()
    if loss not in (None, "cosine"):
        raise InvalidInput(
            f"A cross-encoder learns scores by regression; --loss {loss} is for bi-encoders. Leave --loss out."
        )
    train_pairs = read_pairs(train, require_score=True)
    dev_pairs = read_pairs(dev, require_score=True)
    low, high = score_range(train_pairs, train)
    common.check_out(out, overwrite)
    common.require_training()

    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    # num_labels=1 and a sigmoid: one 0..1 similarity per pair, whatever head the base had.
    model = common.load_cross_encoder(base)
    before = cross_encoder_dev_metrics(model, dev_pairs)
    logger.info("dev before: %s", before)
    dataset = Dataset.from_dict(
        {
            "sentence1": [p.sentence1 for p in train_pairs],
            "sentence2": [p.sentence2 for p in train_pairs],
            "score": [(p.score - low) / (high - low) for p in train_pairs if p.score is not None],
        }
    )
    start = time.perf_counter()
    with common.staged_model_dir(out) as tmp:
        args = common.training_args(
            CrossEncoderTrainingArguments,
            tmp / "checkpoints",
            epochs=epochs,
            batch_size=batch_size,
            max_steps=max_steps,
            learning_rate=learning_rate,
            seed=seed,
            progress=progress,
        )
        with common.quiet_model_card(progress):
            trainer = CrossEncoderTrainer(
                model=model, args=args, train_dataset=dataset, loss=BinaryCrossEntropyLoss(model)
            )
        state = common.progress_callbacks(trainer, progress, lambda logs: None).train()
        result = FinetuneResult(
            "cross-encoder",
            base,
            str(out),
            "regression (bce on 0..1 scores)",
            len(train_pairs),
            len(dev_pairs),
            float(epochs),
            int(state.global_step),
            time.perf_counter() - start,
            before,
            cross_encoder_dev_metrics(model, dev_pairs),
            "spearman",
        )
        _save_if_better(result, model.save_pretrained, tmp, train, dev, batch_size, learning_rate, max_steps, seed)
    return result


def _save_if_better(
    result: FinetuneResult,
    save: Callable[[str], object],
    tmp: Path,
    train: str | Path,
    dev: str | Path,
    batch_size: int,
    learning_rate: float,
    max_steps: int | None,
    seed: int,
) -> None:
    """Save the model into ``tmp`` with its record, as a run from a collection does, only when the
    dev metric rose (NotImproved otherwise: the staged folder is removed, ``out`` left as it was)."""
    logger.info("dev after: %s", result.after)
    record = TrainingRecord(
        kind=result.kind,
        base=result.base,
        collection=None,
        metric=result.metric,
        before=common.plain_metrics(result.before),
        after=common.plain_metrics(result.after),
        data={
            "kind": "(query, positive) pairs" if result.metric == "mrr@10" else "scored pairs",
            "train_file": str(train),
            "dev_file": str(dev),
            "train_queries": result.train_pairs,
            "dev_queries": result.dev_pairs,
        },
        hyperparameters={
            "loss": result.loss,
            "epochs": result.epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_steps": max_steps,
            "seed": seed,
        },
        steps=result.steps,
        seconds=round(result.seconds, 1),
        out=result.out,
        versions=common.library_versions(),
    )
    common.refuse_unless_better(record)
    save(str(tmp))
    common.drop_work_files(tmp)
    write_record(tmp, record)
