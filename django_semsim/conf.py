"""The ``SEMSIM`` settings dict: defaults in code, read lazily, re-read when a test overrides it.

:data:`SETTINGS` is the one place each key's type, default and meaning are written; the README's
table is :func:`settings_table` (a test compares them). ``EF_SEARCH`` and ``ITERATIVE_SCAN`` take
their defaults from the core's :class:`semsim_pg.settings.Settings`, so both sides search alike.

Nothing here loads a model or opens a connection; :func:`get_config` is cheap and may be called
at class-creation time (the companion's vector dimension comes from it).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from semsim_pg.errors import ConfigurationError
from semsim_pg.settings import DEFAULT_MODEL, ITERATIVE_SCAN_MODES
from semsim_pg.settings import Settings as CoreSettings
from semsim_pg.validation import MAX_K

__all__ = [
    "DEFAULTS",
    "SETTINGS",
    "SYNC_MODES",
    "SemsimConfig",
    "Setting",
    "get_config",
    "model_dimension",
    "reset_config",
    "settings_table",
]

logger = logging.getLogger(__name__)

SYNC_MODES = ("immediate", "inline", "worker")


@dataclass(frozen=True)
class Setting:
    """One key of ``settings.SEMSIM``: the README's settings table is generated from these."""

    key: str
    type: str
    default: Any
    meaning: str


_CORE = {f.name: f.default for f in fields(CoreSettings)}

#: Every key ``SEMSIM`` accepts: its type, its default and what it does (the one place for each).
SETTINGS: tuple[Setting, ...] = (
    Setting("MODEL", "str", DEFAULT_MODEL, "sentence-transformers model: a name or a directory"),
    Setting("DIMENSIONS", "int or None", None, "vector size of MODEL; None reads it from the model's files"),
    Setting("DEVICE", "str or None", None, "torch device for encoding (None: sentence-transformers' choice)"),
    Setting(
        "SYNC",
        "str",
        "immediate",
        '"immediate": encode after commit in a background thread of this process; "inline": after commit in '
        'the saving thread (tests, scripts); "worker": leave it to `manage.py semsim_worker`',
    ),
    Setting(
        "QUEUE_SIZE",
        "int",
        10_000,
        "immediate mode: most rows waiting for the background thread; past it a row stays stale (logged) "
        "for `semsim_worker` / `semsim_reindex --stale`, and save() never waits",
    ),
    Setting(
        "PRELOAD",
        "bool",
        False,
        "load the model and encode once in `AppConfig.ready()` of web and worker processes (not under migrate & co)",
    ),
    Setting("BATCH_SIZE", "int", 64, "texts per encoder call and rows per worker claim"),
    Setting(
        "DEFAULT_K", "int", 10, "rows `semantic_search()` / `similar_to()` return without `k` (`k=None`: every row)"
    ),
    Setting("EF_SEARCH", "int", _CORE["ef_search"], "`hnsw.ef_search` of searches (per query: `ef_search=`)"),
    Setting(
        "ITERATIVE_SCAN",
        "str",
        _CORE["iterative_scan"],
        "`hnsw.iterative_scan`: off, relaxed_order or strict_order (per query: `iterative_scan=`)",
    ),
    Setting(
        "TEXT_SEARCH_CONFIG",
        "str",
        _CORE["text_search_config"],
        "PostgreSQL text search configuration of `hybrid_search()`'s words (`english`, `simple`, `italian`, ...); "
        "a model's `search_config` overrides it",
    ),
    Setting("HNSW_M", "int", 16, "HNSW `m` of generated companion indexes (a change needs makemigrations)"),
    Setting(
        "HNSW_EF_CONSTRUCTION",
        "int",
        64,
        "HNSW `ef_construction` of generated companion indexes (at least twice `HNSW_M`)",
    ),
    Setting("WORKER_POLL_SECONDS", "float", 2.0, "seconds a worker sleeps when the queue is empty"),
    Setting("WORKER_MAX_BACKOFF_SECONDS", "float", 60.0, "longest back-off of a worker after encoder failures"),
    Setting(
        "MIGRATE_LOCK_TIMEOUT_SECONDS",
        "float",
        3.0,
        "longest wait of `migrate`'s change of a companion's foreign key for its table locks (reads and writes "
        "of the table queue meanwhile); past it the key is left for the next `migrate` (check `semsim.W007`)",
    ),
    Setting(
        "FAQ_THRESHOLD",
        "float or None",
        None,
        "least similarity that answers an FAQ question (None: the core's `SEMSIM_FAQ_THRESHOLD` or built-in "
        "default; measure yours with `semsim eval faq`)",
    ),
    Setting(
        "FAQ_RERANK_THRESHOLD",
        "float or None",
        None,
        "the same on the cross-encoder's scale, when the answer is reranked",
    ),
    Setting(
        "CROSS_ENCODER",
        "str or None",
        None,
        "cross-encoder for `rerank=True` and the FAQ admin (None: the core's `SEMSIM_CROSS_ENCODER`)",
    ),
    Setting("FAQ_ADMIN", "bool", True, "register the FAQ with the default admin site (needs `django_semsim.faq`)"),
    Setting(
        "QUERY_LOG",
        "bool",
        False,
        "log FAQ questions and text searches for the insights admin pages (needs `django_semsim.insights`)",
    ),
    Setting(
        "QUERY_LOG_TEXT",
        "bool",
        True,
        "False: log only a keyed hash (from `SECRET_KEY`) of each question's text; the vector is still logged",
    ),
    Setting("QUERY_LOG_SAMPLE_RATE", "float", 1.0, "the share of questions logged, 0 to 1"),
    Setting(
        "QUERY_LOG_DRIFT_THRESHOLD",
        "float",
        0.2,
        'PSI of the top-1 score distribution at which "Search insights" flags drift',
    ),
)
DEFAULTS: dict[str, Any] = {s.key: s.default for s in SETTINGS}


def settings_table() -> str:
    """The README's table of SEMSIM keys (tests/test_django_checks.py checks the README holds it)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = json.dumps(s.default) if isinstance(s.default, str) else repr(s.default)
        lines.append(f"| `{s.key}` | {s.type} | `{default}` | {s.meaning} |")
    return "\n".join(lines)


# Dimensions of well-known models, so that import time never needs the weights.
_KNOWN_DIMENSIONS = {
    "all-minilm-l6-v2": 384,
    "all-minilm-l12-v2": 384,
    "paraphrase-minilm-l6-v2": 384,
    "multi-qa-minilm-l6-cos-v1": 384,
    "all-mpnet-base-v2": 768,
    "all-distilroberta-v1": 768,
    "paraphrase-multilingual-minilm-l12-v2": 384,
}


@dataclass(frozen=True)
class SemsimConfig:
    model: str
    dimensions: int
    device: str | None
    sync: str
    queue_size: int
    preload: bool
    batch_size: int
    default_k: int
    ef_search: int
    iterative_scan: str
    text_search_config: str
    hnsw_m: int
    hnsw_ef_construction: int
    worker_poll_seconds: float
    worker_max_backoff_seconds: float
    migrate_lock_timeout_seconds: float
    faq_threshold: float | None
    faq_rerank_threshold: float | None
    cross_encoder: str | None
    faq_admin: bool
    query_log: bool
    query_log_text: bool
    query_log_sample_rate: float
    query_log_drift_threshold: float

    @property
    def immediate(self) -> bool:
        """Encoded by this process after commit (in the background, or inline)."""
        return self.sync in ("immediate", "inline")

    @cached_property
    def model_name(self) -> str:
        """The canonical name recorded with every vector (the same as the core's)."""
        return _canonical_name(self.model)


_lock = threading.Lock()
_config: SemsimConfig | None = None


def get_config() -> SemsimConfig:
    """The validated ``SEMSIM`` settings (cached; :func:`reset_config` forgets them)."""
    global _config
    with _lock:
        if _config is None:
            _config = _load()
        return _config


def reset_config(**_: Any) -> None:
    """Forget the cached config (connected to ``setting_changed``, so test overrides apply)."""
    global _config
    with _lock:
        _config = None


def _load() -> SemsimConfig:
    from django.conf import settings

    raw = getattr(settings, "SEMSIM", None) or {}
    if not isinstance(raw, dict):
        raise ConfigurationError(f"settings.SEMSIM must be a dict, got {type(raw).__name__}.")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigurationError(
            f"Unknown key(s) in settings.SEMSIM: {', '.join(unknown)}. Valid keys: {', '.join(sorted(DEFAULTS))}."
        )
    values = {**DEFAULTS, **raw}
    problems = []
    if values["SYNC"] not in SYNC_MODES:
        problems.append(f"SYNC must be one of {', '.join(SYNC_MODES)}, got {values['SYNC']!r}")
    if values["ITERATIVE_SCAN"] not in ITERATIVE_SCAN_MODES:
        problems.append(
            f"ITERATIVE_SCAN must be one of {', '.join(ITERATIVE_SCAN_MODES)}, got {values['ITERATIVE_SCAN']!r}"
        )
    for key, low, high in (
        ("BATCH_SIZE", 1, 100_000),
        ("QUEUE_SIZE", 1, 10_000_000),
        ("DEFAULT_K", 1, MAX_K),
        ("EF_SEARCH", 1, 1000),
        ("HNSW_M", 2, 100),
        ("HNSW_EF_CONSTRUCTION", 4, 1000),
    ):
        if not isinstance(values[key], int) or not low <= values[key] <= high:
            problems.append(f"{key} must be a whole number between {low} and {high}, got {values[key]!r}")
    m, ef_construction = values["HNSW_M"], values["HNSW_EF_CONSTRUCTION"]
    if isinstance(m, int) and isinstance(ef_construction, int) and ef_construction < 2 * m:
        problems.append(
            f"HNSW_EF_CONSTRUCTION ({ef_construction}) must be at least twice HNSW_M ({m}), as pgvector requires: "
            f"raise it to {2 * m} or more, or lower HNSW_M"
        )
    dims = values["DIMENSIONS"]
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 16_000):
        problems.append(f"DIMENSIONS must be None or a whole number between 1 and 16000, got {dims!r}")
    for key, floor, ceiling in (
        ("WORKER_POLL_SECONDS", 0.01, 3600.0),
        ("WORKER_MAX_BACKOFF_SECONDS", 0.01, 86_400.0),
        ("MIGRATE_LOCK_TIMEOUT_SECONDS", 0.01, 3600.0),
    ):
        # a worker that polls every 0 s spins a core on an empty queue
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not floor <= value <= ceiling:
            problems.append(f"{key} must be a number of seconds between {floor:g} and {ceiling:g}, got {value!r}")
    for key in ("FAQ_THRESHOLD", "FAQ_RERANK_THRESHOLD"):
        value = values[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            problems.append(f"{key} must be None or a number, got {value!r}")
    for key in ("PRELOAD", "FAQ_ADMIN", "QUERY_LOG", "QUERY_LOG_TEXT"):
        if not isinstance(values[key], bool):
            problems.append(f"{key} must be True or False, got {values[key]!r}")
    rate = values["QUERY_LOG_SAMPLE_RATE"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        problems.append(f"QUERY_LOG_SAMPLE_RATE must be a number between 0 and 1, got {rate!r}")
    drift = values["QUERY_LOG_DRIFT_THRESHOLD"]
    if isinstance(drift, bool) or not isinstance(drift, int | float) or not drift > 0:
        problems.append(f"QUERY_LOG_DRIFT_THRESHOLD must be a number above 0, got {drift!r}")
    encoder = values["CROSS_ENCODER"]
    if encoder is not None and (not isinstance(encoder, str) or not encoder.strip()):
        problems.append(f"CROSS_ENCODER must be None or a model name or directory, got {encoder!r}")
    config_name = values["TEXT_SEARCH_CONFIG"]
    if not isinstance(config_name, str) or not config_name.strip():
        problems.append(f"TEXT_SEARCH_CONFIG must be the name of a text search configuration, got {config_name!r}")
    if not isinstance(values["MODEL"], str) or not values["MODEL"].strip():
        problems.append(f"MODEL must be a model name or directory, got {values['MODEL']!r}")
    if problems:
        raise ConfigurationError("Invalid settings.SEMSIM: " + "; ".join(problems) + ".")
    dimensions = values["DIMENSIONS"] or model_dimension(values["MODEL"])
    kwargs = {f.name: values[f.name.upper()] for f in fields(SemsimConfig) if f.name != "dimensions"}
    return SemsimConfig(dimensions=int(dimensions), **kwargs)


def _canonical_name(model: str) -> str:
    from semsim_pg.encoder import resolve_model

    return resolve_model(model).name


def model_dimension(model: str) -> int:
    """The output size of ``model``, from a table or the model's config files: never loads torch."""
    known = _KNOWN_DIMENSIONS.get(model.strip().lower().split("/")[-1])
    if known is not None:
        return known
    from semsim_pg.encoder import resolve_model

    source = resolve_model(model)
    folder = Path(source.location)
    if folder.is_dir():
        dimension = _dimension_from_files(folder)
        if dimension is not None:
            return dimension
    raise ConfigurationError(
        f"Cannot tell the vector size of model {model!r} without loading it. "
        "Set SEMSIM['DIMENSIONS'] to its embedding dimension (e.g. 384 or 768)."
    )


def _dimension_from_files(folder: Path) -> int | None:
    """Last Dense layer's out_features, else the transformer's hidden_size (pooling keeps it)."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    for module in reversed(modules):
        if str(module.get("type", "")).endswith("Dense"):
            try:
                config = json.loads((folder / module["path"] / "config.json").read_text())
                return int(config["out_features"])
            except (OSError, ValueError, KeyError):
                return None
    try:
        config = json.loads((folder / "config.json").read_text())
        return int(config.get("hidden_size") or config["d_model"])
    except (OSError, ValueError, KeyError):
        return None
