"""semsim's settings: one object, defaults in code, read from the environment when asked.

Nothing is read at import time. ``Settings.from_env()`` reads the ``SEMSIM_*`` variables;
``get_settings()`` returns the process-wide object and ``configure()`` replaces it (tests,
the Django app, or an application that sets things in code).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from semsim_pg.errors import ConfigurationError
from semsim_pg.sql import METRIC_NAMES

__all__ = [
    "DEFAULT_MODEL",
    "Settings",
    "configure",
    "default_data_dir",
    "get_settings",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
ITERATIVE_SCAN_MODES = ("off", "relaxed_order", "strict_order")
PRECISIONS = ("float32", "bfloat16", "float16")
# Kept here rather than imported from semsim_pg.backends: settings must not import the backends.
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")
#: the most intra-op threads SEMSIM_THREADS may ask for
MAX_THREADS = 1024


def default_data_dir() -> Path:
    """Where the embedded server and caches live when ``SEMSIM_DATA_DIR`` is not set.

    As root the embedded PostgreSQL runs as another OS user, which cannot enter root's home
    (mode 0700), and semsim never opens up folders it does not own: root's default is the
    system-wide ``/var/lib/semsim`` instead, as for any service run by root.
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "semsim"
    if os.geteuid() == 0:
        return Path("/var/lib/semsim")
    return Path.home() / ".local" / "share" / "semsim"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything semsim can be configured with.

    ``database_url`` None means the embedded PostgreSQL server in ``data_dir / "pg"``.
    """

    database_url: str | None = None
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    model: str = DEFAULT_MODEL
    device: str | None = None
    #: weights' dtype: bfloat16 is about 3x faster on CPUs with AMX, within 0.9999 cosine of float32
    precision: str = "float32"
    #: how the model runs: auto (the fastest backend that passes the quality gate on this machine),
    #: torch, torch-bf16, onnx or onnx-int8 (semsim_pg.backends)
    backend: str = "auto"
    #: intra-op threads for torch and onnxruntime (None: their defaults, one per core)
    threads: int | None = None
    cross_encoder: str = DEFAULT_CROSS_ENCODER
    batch_size: int = 64
    query_cache_size: int = 1024
    ef_search: int = 40
    iterative_scan: str = "relaxed_order"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    metric: str = "cosine"
    #: PostgreSQL text search configuration of new collections' lexical search
    text_search_config: str = "english"
    #: FAQ answers need at least this bi-encoder similarity (None: semsim_pg.faq's default)
    faq_threshold: float | None = None
    #: ... or this cross-encoder score when reranked (None: semsim_pg.faq's default)
    faq_rerank_threshold: float | None = None
    #: keep a log of searches and FAQ questions (semsim_pg.insights); off unless asked for
    query_log: bool = False
    #: log the query's text; False keeps only its hash (and its vector, for grouping)
    query_log_text: bool = True
    #: the secret of the query's keyed hash (HMAC-SHA256) in the log; None: one generated once into
    #: data_dir/query_log.key (semsim_pg.insights.log.log_key). Not in repr: it is a secret.
    query_log_key: str | None = dataclasses.field(default=None, repr=False)
    #: the share of queries logged, 0 to 1
    query_log_sample_rate: float = 1.0
    #: drift of the top-1 score distribution (population stability index) flagged at or above this
    query_log_drift_threshold: float = 0.2
    #: connections each engine keeps open to the database, ...
    pool_size: int = 5
    #: ... how many more it opens under load (closed when returned), ...
    pool_max_overflow: int = 10
    #: ... and how long a call waits for one of them to be free before PoolExhausted (seconds)
    pool_timeout: float = 30.0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.query_cache_size >= 0, f"query_cache_size must be >= 0, got {self.query_cache_size}"),
            (1 <= self.ef_search <= 1000, f"ef_search must be between 1 and 1000, got {self.ef_search}"),
            (
                self.iterative_scan in ITERATIVE_SCAN_MODES,
                f"iterative_scan must be one of {', '.join(ITERATIVE_SCAN_MODES)}, got {self.iterative_scan!r}",
            ),
            (2 <= self.hnsw_m <= 100, f"hnsw_m must be between 2 and 100, got {self.hnsw_m}"),
            (
                4 <= self.hnsw_ef_construction <= 1000,
                f"hnsw_ef_construction must be between 4 and 1000, got {self.hnsw_ef_construction}",
            ),
            (
                self.hnsw_ef_construction >= 2 * self.hnsw_m,
                f"hnsw_ef_construction ({self.hnsw_ef_construction}) must be at least twice hnsw_m ({self.hnsw_m}), "
                f"as pgvector requires: raise it to {2 * self.hnsw_m} or more, or lower m",
            ),
            (self.metric in METRIC_NAMES, f"metric must be one of {', '.join(METRIC_NAMES)}, got {self.metric!r}"),
            (bool(self.model.strip()), "model must not be empty"),
            (
                0.0 <= self.query_log_sample_rate <= 1.0,
                f"query_log_sample_rate must be between 0 and 1, got {self.query_log_sample_rate}",
            ),
            (
                self.query_log_drift_threshold > 0,
                f"query_log_drift_threshold must be above 0, got {self.query_log_drift_threshold}",
            ),
            (
                self.backend in BACKENDS,
                f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r} "
                "(auto chooses by measurement; torch always works)",
            ),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            # torch and onnxruntime take a C int and fail with a traceback (torch) or a TypeError
            # (onnxruntime) beyond it; far below that, more threads than cores only slow encoding
            (
                self.threads is None or self.threads <= MAX_THREADS,
                f"threads (SEMSIM_THREADS) must be at most {MAX_THREADS}, got {self.threads}: "
                "set it to the number of cores or fewer, or unset it",
            ),
            (self.pool_size >= 1, f"pool_size must be >= 1, got {self.pool_size}"),
            (self.pool_max_overflow >= 0, f"pool_max_overflow must be >= 0, got {self.pool_max_overflow}"),
            (self.pool_timeout > 0, f"pool_timeout must be a number of seconds above 0, got {self.pool_timeout}"),
            # the pool waits with threading's Condition.wait, which overflows beyond TIMEOUT_MAX
            # (inf, 1e10): refused here rather than as an OverflowError when the pool is full
            (
                not self.pool_timeout > threading.TIMEOUT_MAX,
                f"pool_timeout must be at most {int(threading.TIMEOUT_MAX)} seconds "
                f"(a finite number), got {self.pool_timeout}",
            ),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigurationError(f"Invalid semsim setting: {message}.")

    @property
    def embedded(self) -> bool:
        """True when semsim runs its own PostgreSQL server."""
        return self.database_url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SEMSIM_*`` variables; keyword arguments win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"SEMSIM_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            values[field.name] = _convert(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"]).expanduser()
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _convert(name: str, annotation: object, raw: str) -> Any:
    kind = str(annotation)
    if kind == "bool":
        if raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigurationError(f"SEMSIM_{name.upper()} must be 1/0, true/false, yes/no or on/off, got {raw!r}.")
    if kind in ("int", "int | None"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"SEMSIM_{name.upper()} must be a whole number, got {raw!r}.") from None
    if kind in ("float", "float | None"):
        try:
            return float(raw)
        except ValueError:
            raise ConfigurationError(f"SEMSIM_{name.upper()} must be a number, got {raw!r}.") from None
    if kind == "Path":
        return Path(raw).expanduser()
    return raw


_lock = threading.Lock()
_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = Settings.from_env()
        return _current


def configure(settings: Settings | None = None, **overrides: Any) -> Settings:
    """Replace the process-wide settings (``None`` forgets them: the next use reads the environment)."""
    global _current
    with _lock:
        if settings is None and not overrides:
            _current = None
            return Settings.from_env()
        base = settings if settings is not None else Settings.from_env()
        _current = base.replace(**overrides) if overrides else base
        return _current
