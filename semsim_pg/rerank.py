"""Cross-encoder reranking: the second stage of retrieve-then-rerank.

A bi-encoder search (one SQL statement against the HNSW index) finds ``candidates`` hits fast;
a cross-encoder then reads each (query, text) pair whole, which is slower but judges relevance
better, and reorders them. The reranked result is a plain list (:class:`RerankedHit`), under its
own name, because the data has left SQL: nothing after this stage can be filtered in the database.

The reranker is generic over what it reranks: a core :class:`~semsim_pg.store.SearchHit`, a
Django model instance, a string, anything from which ``text_of`` gets a text. It keeps both
scores: ``similarity`` from the bi-encoder and ``rerank_score`` from the cross-encoder.

**Never below the candidates by construction.** The order follows ``score``, a blend of the
cross-encoder's score and the first stage's (:func:`fuse`): ``(1 - w) x first + w x cross-encoder``.
At ``w = 0`` it is exactly the candidates' own order; a reranker tuned by ``semsim finetune
reranker`` carries the ``w`` that did best on its dev queries in its record (0 is among the
choices, and a reranker whose best is 0 is refused), and every use of it (the CLI, the API,
Django, the FAQ, ``semsim eval``) applies that weight. A cross-encoder without such a record reorders
by its own score alone (``w = 1``).

Models load lazily, once per process and name (:func:`get_reranker`), never at import. A hub name
that is neither cached locally nor downloadable fails at once with :class:`ModelLoadError`
instead of waiting through the hub client's retries (:func:`~semsim_pg.loading.check_hub_model`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import InvalidInput, InvalidQuery, ModelLoadError
from semsim_pg.loading import (
    LazyModel,
    SharedModels,
    check_hub_model,
    dtype_kwargs,
    one_line,
    resolve_model,
    sentence_transformers,
)
from semsim_pg.settings import get_settings

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

    from semsim_pg.store import Collection, DocumentStore, FilterValue, SearchHit

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_TOP_K",
    "RerankedHit",
    "Reranker",
    "check_cross_encoder_folder",
    "first_stage_scores",
    "fuse",
    "fused_order",
    "get_reranker",
    "search_and_rerank",
]

logger = logging.getLogger(__name__)

H = TypeVar("H")


class _HasId(Protocol):
    @property
    def external_id(self) -> str: ...


class _HasText(Protocol):
    @property
    def text(self) -> str: ...


class _HasMetadata(Protocol):
    @property
    def metadata(self) -> dict[str, Any]: ...


_WithId = TypeVar("_WithId", bound=_HasId)
_WithText = TypeVar("_WithText", bound=_HasText)
_WithMetadata = TypeVar("_WithMetadata", bound=_HasMetadata)

DEFAULT_CANDIDATES = 50
DEFAULT_TOP_K = 5
_HOW_TO_GET_ONE = (
    "Train one locally with `semsim finetune cross-encoder --train PAIRS.csv --dev DEV.csv --out DIR` (or copy a "
    "saved cross-encoder folder here) and pass its directory: SEMSIM_CROSS_ENCODER=DIR, Reranker('DIR') or "
    "--rerank DIR."
)


_TRAIN_ONE = "train one with `semsim finetune cross-encoder --train PAIRS.csv --dev DEV.csv --out DIR`"


def check_cross_encoder_folder(folder: str | Path) -> None:
    """Refuse a saved model ``folder`` that is not a cross-encoder, before loading it:
    sentence-transformers would load a bi-encoder (or a bare transformer) as a CrossEncoder with a
    new, untrained scoring head and only warn, and every score would be noise. A folder this
    cannot judge (no config files) is left to the loader."""
    folder = Path(folder)
    st_config = _read_json(folder / "config_sentence_transformers.json")
    model_type = st_config.get("model_type") if st_config is not None else None
    if model_type == "CrossEncoder":  # sentence-transformers >= 5 writes its kind
        return
    if model_type is not None or (folder / "modules.json").is_file():
        raise ModelLoadError(
            f"{folder} is a bi-encoder (sentence-transformers) model, not a cross-encoder: pass a cross-encoder "
            f"folder ({_TRAIN_ONE})."
        )
    architectures = (_read_json(folder / "config.json") or {}).get("architectures")
    if isinstance(architectures, list) and architectures:
        if not any(str(name).endswith("ForSequenceClassification") for name in architectures):
            raise ModelLoadError(
                f"{folder} is not a cross-encoder: its config.json names {', '.join(map(str, architectures))}, not a "
                f"*ForSequenceClassification model that scores a pair. Pass a cross-encoder folder ({_TRAIN_ONE})."
            )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or unreadable: the loader says what is wrong with it
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class RerankedHit(Generic[H]):
    """One reranked item: the original ``hit``, its bi-encoder ``similarity`` (None when the hit had
    none) and the cross-encoder's ``rerank_score`` (higher is more relevant)."""

    hit: H
    similarity: float | None
    rerank_score: float
    #: the item's position before reranking (0 = the bi-encoder's best)
    original_rank: int
    #: what the order follows: the cross-encoder's score blended with the first stage's by the
    #: reranker's weight (:func:`fuse`); None: ``rerank_score`` alone
    score: float | None = None

    def __getattr__(self, name: str) -> Any:
        # Reach through to the hit (a model's fields, a SearchHit's passage) so templates and
        # callers can treat a RerankedHit like what it wraps.
        if name.startswith("__") or name == "hit":
            raise AttributeError(name)
        return getattr(self.hit, name)

    # What callers read most, typed for a hit that has it (a SearchHit, a Django model with such
    # a field): through __getattr__ alone it was Any, which strict mypy lets through unchecked.
    @property
    def external_id(self: RerankedHit[_WithId]) -> str:
        return self.hit.external_id

    @property
    def text(self: RerankedHit[_WithText]) -> str:
        return self.hit.text

    @property
    def metadata(self: RerankedHit[_WithMetadata]) -> dict[str, Any]:
        return self.hit.metadata

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any]
        to_dict = getattr(self.hit, "to_dict", None)
        data = dict(to_dict()) if callable(to_dict) else {"hit": str(self.hit)}
        data.update(
            similarity=self.similarity,
            rerank_score=self.rerank_score,
            original_rank=self.original_rank,
            score=self.rerank_score if self.score is None else self.score,
        )
        return data


#: similarities that rise by less than this along the candidates still count as their order
_ORDER_TOLERANCE = 1e-6


def first_stage_scores(similarities: Sequence[float | None]) -> npt.NDArray[np.float64]:
    """The first stage's score of each candidate, given in the first stage's order; never rising.

    The bi-encoder's similarity when every candidate has one and they come in its order (a
    semantic search); otherwise (a hybrid or lexical search, plain texts) a score that falls with
    the rank, from 1 for the first to 1/n for the last, on the same scale as a similarity.
    """
    n = len(similarities)
    values = [s for s in similarities if s is not None]
    if n and len(values) == n:
        first = np.asarray(values, dtype=np.float64)
        if bool(np.all(np.diff(first) <= _ORDER_TOLERANCE)):
            # A rise within the tolerance is rounding: flattened, so that weight 0 keeps the order.
            return np.minimum.accumulate(first)
    return 1.0 - np.arange(n, dtype=np.float64) / max(n, 1)


def fuse(first: npt.NDArray[np.float64], scores: npt.NDArray[Any], weight: float) -> npt.NDArray[np.float64]:
    """``(1 - weight) x first + weight x scores``: 0 is the first stage's order, 1 the cross-encoder's."""
    return (1.0 - weight) * first + weight * np.asarray(scores, dtype=np.float64)


def fused_order(first: npt.NDArray[np.float64], scores: npt.NDArray[Any], weight: float) -> npt.NDArray[np.intp]:
    """Candidate positions, best first, by :func:`fuse`; equal scores keep the first stage's order
    (so weight 0 gives exactly ``0, 1, ..., n-1``)."""
    return _best_first(fuse(first, scores, weight))


def _best_first(fused: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    """Positions by fused score, best first; ties keep the first stage's order (a stable sort)."""
    return np.argsort(-fused, kind="stable")


def _default_text_of(item: Any) -> str:
    if isinstance(item, str):
        return item
    # django_semsim's SemanticModel instances say which text their vector was made from.
    semantic_text = getattr(item, "semantic_text", None)
    if callable(semantic_text):
        return str(semantic_text())
    text = getattr(item, "text", None)
    if text is None and isinstance(item, dict):
        text = item.get("text")
    if not isinstance(text, str):
        raise InvalidInput(
            f"Cannot rerank a {type(item).__name__}: it has no semantic_text() or text. Pass text_of=, a function that "
            "returns the text to compare with the query."
        )
    return text


def _default_similarity_of(item: Any) -> float | None:
    value = getattr(item, "similarity", None)
    if value is None and isinstance(item, dict):
        value = item.get("similarity")
    return None if value is None else float(value)


class Reranker(LazyModel["CrossEncoder"]):
    """A sentence-transformers ``CrossEncoder`` that scores (query, text) pairs in batches.

    ``model`` is a local directory or a hub name (default: setting ``cross_encoder`` /
    ``SEMSIM_CROSS_ENCODER``). Use :func:`get_reranker` to share one instance per name.
    """

    kind = "cross-encoder"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        precision: str | None = None,
        weight: float | None = None,
    ) -> None:
        settings = get_settings()
        super().__init__(
            resolve_model(model or settings.cross_encoder), device if device is not None else settings.device
        )
        # Same setting as the bi-encoder: bfloat16 weights score about 1.7x faster on CPUs with AMX
        # (benchmarks/rerank_latency.py: a MiniLM-L6-sized model, same top 5, scores within 2e-4).
        self.precision = precision or str(getattr(settings, "precision", "float32"))
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise InvalidInput(f"precision must be float32, bfloat16 or float16, got {self.precision!r}.")
        self.batch_size = batch_size or settings.batch_size
        self.max_length = max_length
        #: how many pairs went through the model (tests and benchmarks count it)
        self.scored_count = 0
        if weight is not None:
            _check_weight(weight, "weight")
        self._weight = weight

    @property
    def weight(self) -> float:
        """The cross-encoder's share of the score the order follows (:func:`fuse`): given, or the one
        the model's fine-tuning record chose on its dev queries, or 1 (its own order) without one."""
        if self._weight is None:
            self._weight = self._recorded_weight()
        return self._weight

    def _recorded_weight(self) -> float:
        if self.source.kind != "path":
            return 1.0
        from semsim_pg.finetune.records import read_record

        record = read_record(self.source.location)
        weight = record.fusion.get("weight") if record is not None and record.kind == "reranker" else None
        if weight is None:
            return 1.0
        _check_weight(weight, f"the fusion weight in {self.source.location}'s record")
        return float(weight)

    def _load(self) -> CrossEncoder:
        local_only = self.source.local
        if not local_only:
            # Decide before importing torch whether the name can be loaded at all.
            local_only = check_hub_model(
                self.source.location,
                what=f"cross-encoder {self.name!r}",
                organization="cross-encoder",
                fix=_HOW_TO_GET_ONE,
            )
        if self.source.kind in ("path", "packaged"):  # a folder here: judged before it loads
            check_cross_encoder_folder(self.source.location)
        module = sentence_transformers()
        logger.info("loading cross-encoder %s from %s (%s)", self.name, self.source.location, self.precision)
        try:
            model: CrossEncoder = module.CrossEncoder(
                self.source.location,
                device=self.device,
                local_files_only=local_only,
                max_length=self.max_length,
                model_kwargs=dtype_kwargs(self.precision),
            )
        except Exception as exc:  # the hub, the disk or the weights: all mean "cannot load"
            hint = (
                "Check that the directory holds a saved cross-encoder (config.json, weights and tokenizer)."
                if self.source.kind == "path"
                else _HOW_TO_GET_ONE
            )
            raise ModelLoadError(
                f"Cannot load cross-encoder {self.name!r} from {self.source.location}: {one_line(exc)}. {hint}"
            ) from exc
        if model.num_labels != 1:
            raise ModelLoadError(
                f"Cross-encoder {self.name!r} has {model.num_labels} output labels; reranking needs a model with one "
                "relevance score per pair (num_labels=1), such as an ms-marco or STS cross-encoder."
            )
        model.eval()
        return model

    # scoring --------------------------------------------------------------------------------
    def score_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> npt.NDArray[np.float32]:
        """One relevance score per (query, text) pair, in order (the model's own activation applied)."""
        pairs = list(pairs)
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
                raise InvalidInput(f"Pair #{i} must be two texts (query, text), got {pair!r}.")
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        model = self.model
        if show_progress_bar is None:
            show_progress_bar = len(pairs) >= 512 and logger.getEffectiveLevel() <= logging.INFO
        with self._lock:
            scores = model.predict(
                [(pair[0], pair[1]) for pair in pairs],
                batch_size=batch_size or self.batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_numpy=True,
            )
            self.scored_count += len(pairs)
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs))

    def score(self, query: str, texts: Sequence[str], **options: Any) -> npt.NDArray[np.float32]:
        """Scores of ``texts`` against one ``query``."""
        _check_query(query)
        return self.score_pairs([(query, text) for text in texts], **options)

    def rerank(
        self,
        query: str,
        hits: Sequence[H],
        top_k: int | None = DEFAULT_TOP_K,
        candidates: int | None = None,
        *,
        text_of: Callable[[H], str] | None = None,
        similarity_of: Callable[[H], float | None] | None = None,
    ) -> list[RerankedHit[H]]:
        """Reorder ``hits`` by the cross-encoder's score for (query, text of hit) blended with the
        first stage's by :attr:`weight` (:func:`fuse`), best first.

        Only the first ``candidates`` hits are read (all when None): pass them in the first
        stage's order. Returns at most ``top_k`` (all when None); fewer hits than ``top_k`` simply
        give fewer results, and no hits give an empty list without loading the model. Ties keep the
        first stage's order.
        """
        _check_query(query)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidQuery(f"top_k must be a whole number of at least 1, got {top_k!r}.")
        if candidates is not None and (
            isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1
        ):
            raise InvalidQuery(f"candidates must be a whole number of at least 1, got {candidates!r}.")
        items = list(hits if candidates is None else hits[:candidates])
        if not items:
            return []
        get_text = text_of or _default_text_of
        get_similarity = similarity_of or _default_similarity_of
        scores = self.score(query, [get_text(item) for item in items])
        similarities = [get_similarity(item) for item in items]
        first = first_stage_scores(similarities)
        weight = self.weight
        blended = fuse(first, scores, weight)
        order = _best_first(blended)
        if top_k is not None:
            order = order[:top_k]
        return [
            RerankedHit(
                hit=items[i],
                similarity=similarities[i],
                rerank_score=float(scores[i]),
                original_rank=i,
                score=float(blended[i]),
            )
            for i in order.tolist()
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "loaded_from": self.source.location,
            "source": self.source.kind,
            "precision": self.precision,
            "weight": self.weight,
        }


def _check_weight(weight: object, what: str) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= float(weight) <= 1.0:
        raise InvalidInput(f"{what} must be a number from 0 (the first stage's order) to 1, got {weight!r}.")


def _check_query(query: object) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InvalidQuery(
            f"A cross-encoder reads the query as text: got {query!r}. Give a text with at least one word."
        )


_rerankers: SharedModels[Reranker] = SharedModels()


def get_reranker(name: str | None = None, *, device: str | None = None) -> Reranker:
    """The process-wide reranker for a model name or path (default: the configured cross-encoder).

    Creating it costs nothing; the model loads on the first score.
    """
    settings = get_settings()
    model = name or settings.cross_encoder
    dev = device if device is not None else settings.device
    return _rerankers.get((resolve_model(model).name, dev), lambda: Reranker(model, device=dev))


def search_and_rerank(
    store: DocumentStore,
    collection: str | Collection,
    query: str,
    *,
    candidates: int = DEFAULT_CANDIDATES,
    top_k: int = DEFAULT_TOP_K,
    reranker: Reranker | str | None = None,
    filter: dict[str, FilterValue] | None = None,
    ef_search: int | None = None,
    mode: str = "semantic",
    min_similarity: float | None = None,
    exact: bool = False,
) -> list[RerankedHit[SearchHit]]:
    """Two-stage search: ``candidates`` hits of a search in ``mode`` (semantic: the HNSW index;
    lexical or hybrid: see :meth:`DocumentStore.search`), the best ``top_k`` by cross-encoder.
    ``filter``, ``ef_search``, ``min_similarity`` and ``exact`` apply to the first stage, as in
    :meth:`DocumentStore.search`.

    ``reranker`` is a :class:`Reranker`, a model name or path, or None for the configured one.
    ``"auto"`` reranks with the configured cross-encoder only when its fine-tuning record shows a
    gain on this collection (:func:`semsim_pg.finetune.decide_rerank`); otherwise the first
    stage's (the ``mode`` search's) top ``top_k`` come back in its order, with ``rerank_score``
    equal to the similarity and ``score`` to the stage's own, and the reason is logged.
    """
    _check_query(query)

    def first_stage(k: int) -> list[SearchHit]:
        return store.search(
            collection,
            query,
            k=k,
            filter=filter,
            ef_search=ef_search,
            mode=mode,
            min_similarity=min_similarity,
            exact=exact,
        )

    if reranker == "auto":
        from semsim_pg.finetune.records import decide_rerank

        name = collection if isinstance(collection, str) else collection.name
        decision = decide_rerank(name)
        logger.info("%s", decision.reason)
        if not decision.use:
            # the first stage's own top_k, in its own order (a hybrid's fused score, a lexical BM25)
            hits = first_stage(top_k)
            return [RerankedHit(hit, hit.similarity, hit.similarity, rank, hit.score) for rank, hit in enumerate(hits)]
        reranker = decision.model
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidQuery(f"top_k must be a whole number of at least 1, got {top_k!r}.")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise InvalidQuery(f"candidates must be a whole number of at least 1, got {candidates!r}.")
    if candidates < top_k:
        logger.debug("candidates (%d) < top_k (%d): at most %d results", candidates, top_k, candidates)
    model = (reranker if isinstance(reranker, Reranker) else get_reranker(reranker)).load()
    return model.rerank(query, first_stage(candidates), top_k=top_k)
