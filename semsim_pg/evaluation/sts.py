"""STS evaluation: how well a model's similarity scores agree with human ones.

For a bi-encoder every pair is scored four ways, as sentence-transformers'
``EmbeddingSimilarityEvaluator`` does, so figures compare with published tables: cosine,
negative Euclidean distance, negative Manhattan distance and the dot product. The vectors are
the ones semsim stores (:meth:`Encoder.encode`: unit length), so cosine and dot agree, as they do
in the database. A cross-encoder reads both sentences at once and gives one score per pair.

Each distinct sentence is encoded once, however many pairs it appears in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from semsim_pg.errors import ModelLoadError
from semsim_pg.evaluation.files import SentencePair, score_range
from semsim_pg.evaluation.metrics import pearson, spearman

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

    from semsim_pg.encoder import Encoder

__all__ = [
    "SIMILARITIES",
    "PairError",
    "STSReport",
    "ScorerResult",
    "bi_encoder_scores",
    "cross_encoder_scores",
    "evaluate_sts",
    "load_cross_encoder",
    "rescale",
]

logger = logging.getLogger(__name__)

#: The similarity functions a bi-encoder is scored with, in table order.
SIMILARITIES = ("cosine", "euclidean", "manhattan", "dot")

EncodeFn = Callable[[Sequence[str]], NDArray[np.float32]]


def bi_encoder_scores(encode: EncodeFn, pairs: Sequence[SentencePair]) -> dict[str, NDArray[np.float64]]:
    """Similarity of each pair under each of :data:`SIMILARITIES` (higher = more similar)."""
    unique = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))
    position = {text: i for i, text in enumerate(unique)}
    vectors = np.asarray(encode(unique), dtype=np.float64)
    a = vectors[[position[p.sentence1] for p in pairs]]
    b = vectors[[position[p.sentence2] for p in pairs]]
    dot = np.einsum("ij,ij->i", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return {
        "cosine": dot / np.maximum(norms, 1e-12),
        "euclidean": -np.linalg.norm(a - b, axis=1),
        "manhattan": -np.abs(a - b).sum(axis=1),
        "dot": dot,
    }


def load_cross_encoder(path: str, *, device: str | None = None) -> CrossEncoder:
    """A sentence-transformers CrossEncoder from a directory (loaded without asking a hub) or a name."""
    from semsim_pg.loading import check_hub_model, one_line, sentence_transformers
    from semsim_pg.rerank import check_cross_encoder_folder

    fix = "Give the directory of a saved CrossEncoder, e.g. one made by `semsim finetune cross-encoder`."
    location = Path(path).expanduser()
    local = location.is_dir() or check_hub_model(
        path, what=f"cross-encoder {path!r}", organization="cross-encoder", fix=fix
    )
    if location.is_dir():
        check_cross_encoder_folder(location)
    module = sentence_transformers()
    try:
        model: CrossEncoder = module.CrossEncoder(str(location), device=device, local_files_only=local)
    except Exception as exc:  # disk, hub or weights: all mean "cannot load"
        raise ModelLoadError(f"Cannot load cross-encoder {path!r}: {one_line(exc)}. {fix}") from exc
    return model


def cross_encoder_scores(
    model: CrossEncoder, pairs: Sequence[SentencePair], *, batch_size: int = 32, progress: bool = False
) -> NDArray[np.float64]:
    """The cross-encoder's score for each pair (after its own activation, e.g. a sigmoid: 0..1)."""
    scores = model.predict(
        [(p.sentence1, p.sentence2) for p in pairs],
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
    )
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ModelLoadError(
            f"The cross-encoder gives {array.shape[-1]} scores per pair; STS needs one (a model with num_labels=1)."
        )
    return array


def rescale(values: NDArray[np.float64], low: float, high: float) -> NDArray[np.float64]:
    """Map [low, high] to [0, 1], clipping what lies outside."""
    return np.asarray(np.clip((values - low) / (high - low), 0.0, 1.0), dtype=np.float64)


@dataclass
class ScorerResult:
    """One model's figures. ``pearson``/``spearman`` map a similarity name to a correlation x100."""

    name: str
    kind: str  # "bi-encoder" or "cross-encoder"
    pearson: dict[str, float]
    spearman: dict[str, float]
    seconds: float
    #: the scores rescaled to 0..1, for the error listing (cosine for a bi-encoder)
    predicted: NDArray[np.float64] = field(repr=False)
    dimension: int | None = None

    @property
    def primary(self) -> float:
        """The headline figure: Spearman x100 of cosine (bi-encoder) or of the score (cross-encoder)."""
        return self.spearman["cosine" if self.kind == "bi-encoder" else "score"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "dimension": self.dimension,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class PairError:
    """A pair whose predicted similarity is far from the gold one (both on 0..1)."""

    line: int
    sentence1: str
    sentence2: str
    gold: float
    predicted: float

    @property
    def error(self) -> float:
        return self.predicted - self.gold


@dataclass
class STSReport:
    source: str
    pairs: list[SentencePair] = field(repr=False)
    gold_range: tuple[float, float]
    results: list[ScorerResult]

    def gold(self) -> NDArray[np.float64]:
        return rescale(np.array([p.score for p in self.pairs], dtype=np.float64), *self.gold_range)

    def top_errors(self, result: ScorerResult, n: int) -> list[PairError]:
        """The n pairs this model gets most wrong, largest absolute error first."""
        gold = self.gold()
        order = np.argsort(-np.abs(result.predicted - gold), kind="stable")[: max(n, 0)]
        return [
            PairError(
                self.pairs[i].line,
                self.pairs[i].sentence1,
                self.pairs[i].sentence2,
                float(gold[i]),
                float(result.predicted[i]),
            )
            for i in order
        ]

    def to_dict(self, top_errors: int = 0) -> dict[str, Any]:
        return {
            "file": self.source,
            "pairs": len(self.pairs),
            "gold_range": list(self.gold_range),
            "results": [
                {
                    **r.to_dict(),
                    "top_errors": [{**e.__dict__, "error": round(e.error, 4)} for e in self.top_errors(r, top_errors)],
                }
                for r in self.results
            ],
        }


def _correlations(gold: NDArray[np.float64], scores: dict[str, NDArray[np.float64]]) -> tuple[dict[str, float], ...]:
    return (
        {name: 100.0 * pearson(s, gold) for name, s in scores.items()},
        {name: 100.0 * spearman(s, gold) for name, s in scores.items()},
    )


def evaluate_bi_encoder(
    encoder: Encoder, pairs: Sequence[SentencePair], gold: NDArray[np.float64], *, progress: bool = False
) -> ScorerResult:
    start = time.perf_counter()

    def encode(texts: Sequence[str]) -> NDArray[np.float32]:
        return encoder.encode(texts, show_progress_bar=progress)

    scores = bi_encoder_scores(encode, pairs)
    seconds = time.perf_counter() - start
    pear, spear = _correlations(gold, scores)
    # Cosine of unit vectors is already a similarity on [-1, 1]; unrelated pairs sit near 0,
    # which is what a gold 0 means, so clip rather than stretch.
    predicted = np.clip(scores["cosine"], 0.0, 1.0)
    return ScorerResult(encoder.name, "bi-encoder", pear, spear, seconds, predicted, encoder.dimension)


def evaluate_cross_encoder(
    path: str, pairs: Sequence[SentencePair], gold: NDArray[np.float64], *, progress: bool = False
) -> ScorerResult:
    model = load_cross_encoder(path)
    start = time.perf_counter()
    scores = cross_encoder_scores(model, pairs, progress=progress)
    seconds = time.perf_counter() - start
    pear, spear = _correlations(gold, {"score": scores})
    low, high = float(scores.min()), float(scores.max())
    # A sigmoid head already gives 0..1; raw logits are stretched to it.
    predicted = scores if low >= 0.0 and high <= 1.0 else rescale(scores, low, max(high, low + 1e-12))
    return ScorerResult(path, "cross-encoder", pear, spear, seconds, predicted)


def evaluate_sts(
    pairs: Sequence[SentencePair],
    *,
    models: Sequence[str | Encoder] = (),
    cross_encoders: Sequence[str] = (),
    source: str = "",
    progress: bool = False,
) -> STSReport:
    """Score every pair with each model and each cross-encoder and correlate with the gold scores.

    ``models`` are names, paths or :class:`Encoder` objects; with neither models nor
    cross-encoders the configured model is used.
    """
    from semsim_pg.encoder import Encoder, get_encoder
    from semsim_pg.rerank import check_cross_encoder_folder

    pairs = list(pairs)
    gold_range = score_range(pairs, source or "the pairs")
    gold = np.array([p.score for p in pairs], dtype=np.float64)
    if not models and not cross_encoders:
        models = [get_encoder()]
    for path in cross_encoders:  # a wrong folder fails before minutes of encoding with the models
        if Path(path).expanduser().is_dir():
            check_cross_encoder_folder(Path(path).expanduser())
    results: list[ScorerResult] = []
    for model in models:
        encoder = model if isinstance(model, Encoder) else get_encoder(model)
        logger.info("scoring %d pairs with %s", len(pairs), encoder.name)
        results.append(evaluate_bi_encoder(encoder, pairs, gold, progress=progress))
    for path in cross_encoders:
        logger.info("scoring %d pairs with cross-encoder %s", len(pairs), path)
        results.append(evaluate_cross_encoder(path, pairs, gold, progress=progress))
    return STSReport(source, pairs, gold_range, results)
