"""``semsim stats``: volume, latency, answer rate and the top-1 score distribution of a window,
per day, and the drift of that distribution against the window before it.

The figures are SQL aggregates (percentiles with ``percentile_cont``, per-day ``date_trunc``);
only the top-1 scores the drift test compares leave the database, sampled to at most
:data:`SAMPLE_LIMIT` per window. Drift is the population stability index (PSI) over the
baseline's deciles, with scipy's two-sample Kolmogorov-Smirnov test beside it; PSI decides the
flag (at or above ``Settings.query_log_drift_threshold``, 0.2 by default, the usual "significant
shift") because with thousands of queries a KS test calls even a harmless change significant.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.errors import QueryLogEmpty
from semsim_pg.insights.periods import as_utc
from semsim_pg.queries import tables

__all__ = [
    "ENABLE_HINT",
    "SAMPLE_LIMIT",
    "DayFigures",
    "Drift",
    "QueryStats",
    "WindowFigures",
    "check_logged",
    "ever_logged",
    "plot_stats",
    "query_stats",
]

logger = logging.getLogger(__name__)

#: top-1 scores per window the drift test reads at most (a uniform sample beyond)
SAMPLE_LIMIT = 50_000
#: how to turn the log on, for "nothing was ever logged"
ENABLE_HINT = (
    "the query log is off by default. Turn it on with SEMSIM_QUERY_LOG=1 (SEMSIM['QUERY_LOG'] = True in "
    "Django), then search or ask questions; SEMSIM_QUERY_LOG_TEXT=0 keeps only a hash of each query."
)
#: fewer queries than this in either window: no drift verdict
MIN_DRIFT_SAMPLES = 50
HISTOGRAM_BINS = 20
_PSI_BINS = 10
_PSI_FLOOR = 1e-4  # an empty bin counts as this share, so PSI stays finite


@dataclass(frozen=True)
class WindowFigures:
    start: dt.datetime
    end: dt.datetime
    queries: int
    faq_questions: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    answer_rate: float | None
    mean_top_score: float | None


@dataclass(frozen=True)
class DayFigures:
    day: dt.date
    queries: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    answer_rate: float | None
    mean_top_score: float | None


@dataclass(frozen=True)
class Drift:
    """The top-1 score distribution of the window against the baseline window before it."""

    baseline: WindowFigures
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    threshold: float
    flagged: bool
    message: str
    baseline_models: dict[str, int] = field(default_factory=dict)
    current_models: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryStats:
    collection: str
    window: WindowFigures
    days: list[DayFigures]
    histogram_edges: list[float]
    histogram_counts: list[int]
    drift: Drift

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def _figures(conn: Connection, collection: str, start: dt.datetime, end: dt.datetime, table: sa.Table) -> WindowFigures:
    row = conn.execute(queries.window_summary(collection, start, end, table)).one()
    return WindowFigures(start, end, int(row[0]), int(row[1]), _opt(row[2]), _opt(row[3]), _opt(row[4]), _opt(row[5]))


def _scores(
    conn: Connection, collection: str, start: dt.datetime, end: dt.datetime, table: sa.Table
) -> npt.NDArray[np.float64]:
    values = conn.execute(queries.top_scores(collection, start, end, SAMPLE_LIMIT, table)).scalars().all()
    return np.asarray(values, dtype=np.float64)


def _models(conn: Connection, collection: str, start: dt.datetime, end: dt.datetime, table: sa.Table) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in conn.execute(queries.log_models(collection, start, end, table))}


def check_logged(
    engine: Engine,
    collection: str,
    table: sa.Table,
    enable_hint: str = ENABLE_HINT,
    require_collection: Callable[[], object] | None = None,
) -> None:
    """Nothing when the log keeps a query of ``collection``; else the error that says why, as
    far as the database tells: ``require_collection`` (which raises the usual not-found error)
    for a name that is no collection, :class:`QueryLogEmpty` with ``enable_hint`` when the log
    table was never written to, and one that says its queries were pruned (or none was logged
    while the log was on) when it was. A collection's rows are not told apart from a name the
    log never saw once others were logged: the message names both."""
    with connect(engine) as conn:
        if conn.execute(queries.has_log(collection, table)).scalar():
            return
        if require_collection is not None:
            require_collection()
    if not ever_logged(engine, table):
        raise QueryLogEmpty(f"Nothing was ever logged for {collection!r}: {enable_hint}")
    raise QueryLogEmpty(
        f"The query log keeps no query of {collection!r}: the ones logged were pruned, or none was logged "
        "while the log was on. Figures start with the next query logged."
    )


def ever_logged(engine: Engine, table: sa.Table) -> bool | None:
    """Whether a query was ever written to the log table, pruned since or not (its id sequence
    was used); None when this role may not read the sequence."""
    try:
        with connect(engine) as conn:
            return bool(conn.execute(queries.log_ever_written(table)).scalar())
    except sa.exc.DBAPIError as exc:
        logger.debug("query log: cannot tell whether %s was ever written (%s)", table.name, exc)
        return None


def query_stats(
    engine: Engine,
    collection: str,
    since: dt.datetime,
    *,
    baseline: dt.timedelta | None = None,
    threshold: float = 0.2,
    now: dt.datetime | None = None,
    table: sa.Table | None = None,
    enable_hint: str = ENABLE_HINT,
    require_collection: Callable[[], object] | None = None,
) -> QueryStats:
    """The figures of ``[since, now)`` and its drift against the ``baseline`` before ``since``
    (default: a window as long as this one). When the log keeps nothing of ``collection``, the
    error of :func:`check_logged` (``enable_hint``, ``require_collection``: see there).
    ``table``: the log (default semsim's own)."""
    table = tables.query_log if table is None else table
    now = now or dt.datetime.now(dt.UTC)
    since = as_utc(since)  # shown as UTC (the CLI's header, the plot)
    baseline = baseline or (now - since)
    check_logged(engine, collection, table, enable_hint, require_collection)
    with connect(engine) as conn:
        window = _figures(conn, collection, since, now, table)
        days = [
            DayFigures(r[0].date(), int(r[1]), _opt(r[2]), _opt(r[3]), _opt(r[4]), _opt(r[5]))
            for r in conn.execute(queries.daily_series(collection, since, now, table))
        ]
        current = _scores(conn, collection, since, now, table)
        try:
            base_start = since - baseline
        except OverflowError:  # a window from a date in the year 1 or so: the one before is all time
            base_start = dt.datetime.min.replace(tzinfo=dt.UTC)
        base_window = _figures(conn, collection, base_start, since, table)
        reference = _scores(conn, collection, base_start, since, table)
        models_now = _models(conn, collection, since, now, table)
        models_before = _models(conn, collection, base_start, since, table)
    edges, counts = _histogram(current)
    drift = _drift(current, reference, base_window, window, threshold, models_before, models_now)
    return QueryStats(collection, window, days, edges, counts, drift)


def _histogram(scores: npt.NDArray[np.float64]) -> tuple[list[float], list[int]]:
    # Similarities of the usual metrics fall in [0, 1]; widen only for scores outside it.
    low = min(0.0, float(scores.min())) if scores.size else 0.0
    high = max(1.0, float(scores.max())) if scores.size else 1.0
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(low, high))
    return [round(float(e), 6) for e in edges], [int(c) for c in counts]


def population_stability_index(
    reference: npt.NDArray[np.float64], current: npt.NDArray[np.float64], bins: int = _PSI_BINS
) -> float:
    """PSI = sum over the reference's quantile bins of (p_cur - p_ref) * ln(p_cur / p_ref)."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=inner.size + 1) / reference.size
    cur = np.bincount(np.searchsorted(inner, current, side="right"), minlength=inner.size + 1) / current.size
    ref, cur = np.maximum(ref, _PSI_FLOOR), np.maximum(cur, _PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _drift(
    current: npt.NDArray[np.float64],
    reference: npt.NDArray[np.float64],
    base_window: WindowFigures,
    window: WindowFigures,
    threshold: float,
    models_before: dict[str, int],
    models_now: dict[str, int],
) -> Drift:
    def verdict(psi: float | None, ks: tuple[float, float] | None, flagged: bool, message: str) -> Drift:
        return Drift(
            base_window,
            psi,
            None if ks is None else ks[0],
            None if ks is None else ks[1],
            threshold,
            flagged,
            message,
            models_before,
            models_now,
        )

    if min(current.size, reference.size) < MIN_DRIFT_SAMPLES:
        return verdict(
            None,
            None,
            False,
            f"not enough queries to measure drift ({reference.size} in the baseline window, {current.size} in "
            f"this one; at least {MIN_DRIFT_SAMPLES} each)",
        )
    from scipy.stats import ks_2samp

    psi = population_stability_index(reference, current)
    result = ks_2samp(reference, current)
    ks = (float(result.statistic), float(result.pvalue))
    if psi < threshold:
        return verdict(psi, ks, False, f"no drift: PSI {psi:.3f} < {threshold:g}")
    causes = []
    changed = set(models_now) - set(models_before)
    if changed:
        causes.append(
            f"the encoder model changed ({', '.join(sorted(models_before)) or 'none'} before, "
            f"{', '.join(sorted(models_now))} now): scores of different models are not comparable"
        )
    before, after = float(np.mean(reference)), float(np.mean(current))
    if after < before:
        causes.append(
            f"top-1 scores fell (mean {before:.3f} -> {after:.3f}): people ask about new topics the collection "
            "does not cover (see `semsim faq unanswered`), or the encoder is broken or was swapped (check `semsim info`)"
        )
    else:
        causes.append(
            f"top-1 scores rose (mean {before:.3f} -> {after:.3f}): new content now matches common queries, "
            "people ask narrower questions, or the model changed"
        )
    return verdict(psi, ks, True, f"DRIFT: PSI {psi:.3f} >= {threshold:g}; probable causes: " + "; ".join(causes))


def plot_stats(stats: QueryStats, path: Path | None = None, *, format: str = "png") -> bytes:
    """The top-1 score histogram and the daily series as an image (matplotlib's Agg backend);
    written to ``path`` when given (replaced whole), and returned."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 7), layout="constrained")
    hist, volume, scores = figure.subplots(3, 1)
    edges = np.asarray(stats.histogram_edges)
    hist.bar(edges[:-1], stats.histogram_counts, width=np.diff(edges), align="edge", edgecolor="white")
    hist.set_title(
        f"{stats.collection}: top-1 score of {stats.window.queries} queries since "
        f"{stats.window.start:%Y-%m-%d %H:%M} UTC"
    )
    hist.set_xlabel("top-1 score")
    hist.set_ylabel("queries")
    days = [d.day for d in stats.days]
    volume.bar(days, [d.queries for d in stats.days], color="tab:blue")
    volume.set_ylabel("queries / day")
    latency = volume.twinx()
    latency.plot(days, [d.latency_p95_ms for d in stats.days], color="tab:red", marker=".", label="latency p95 (ms)")
    latency.set_ylabel("latency p95 (ms)")
    scores.plot(days, [d.mean_top_score for d in stats.days], marker="o", label="mean top-1 score")
    if any(d.answer_rate is not None for d in stats.days):
        scores.plot(days, [d.answer_rate for d in stats.days], marker="s", label="answer rate")
    scores.set_ylim(0, 1.05)
    scores.legend(loc="lower left")
    scores.set_title(stats.drift.message, fontsize=8, loc="left", wrap=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=format)
    data = buffer.getvalue()
    if path is not None:
        # Written beside and renamed over: a reader never sees half an image.
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return data
