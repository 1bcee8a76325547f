"""Statements on ``query_log``: the log writer's insert, the figures of ``semsim stats``, the
unanswered questions ``semsim faq unanswered`` groups, resolving them, and pruning.

Windows are half-open ``[start, end)`` on ``created_at``; ``end`` None means up to now. Each
statement takes the log table (default semsim's own; the Django app keeps one of the same shape).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, REGCLASS, distinct_on

from semsim_pg.queries.tables import query_log

__all__ = [
    "LOG_COLUMNS",
    "copy_log",
    "count_before",
    "daily_series",
    "has_log",
    "insert_log",
    "lock_unresolved",
    "log_ever_written",
    "log_models",
    "log_table",
    "prune_log",
    "resolve_queries",
    "resolved_queries",
    "top_scores",
    "unanswered_models",
    "unanswered_queries",
    "window_summary",
]


#: the columns the log writer fills, in :func:`copy_log`'s order, with their binary COPY types
LOG_COLUMNS = (
    ("created_at", "timestamptz"),
    ("collection", "text"),
    ("kind", "text"),
    ("mode", "text"),
    ("k", "int4"),
    ("query_text", "text"),
    ("query_hash", "text"),
    ("model_name", "text"),
    ("embedding", "vector"),
    ("result_ids", "text[]"),
    ("result_scores", "float8[]"),
    ("top_score", "float8"),
    ("answered", "bool"),
    ("latency_ms", "float8"),
)


def log_table(name: str) -> sa.Table:
    """A table of the log's columns under another name, in the search path's schema (the Django
    app keeps its log in one)."""
    return query_log.to_metadata(sa.MetaData(), schema=None, name=name)  # type: ignore[arg-type]


def copy_log(table: sa.Table = query_log) -> str:
    """The writer's binary COPY into the log (psycopg's ``cursor.copy``; one round trip a batch)."""
    columns = ", ".join(name for name, _ in LOG_COLUMNS)
    name = table.name if table.schema is None else f"{table.schema}.{table.name}"
    return f"COPY {name} ({columns}) FROM STDIN (FORMAT BINARY)"


def insert_log(table: sa.Table = query_log) -> sa.Insert:
    """A plain insert into the log (executed with a list of rows: tests, imports)."""
    return sa.insert(table)


def has_log(collection: str, table: sa.Table = query_log) -> sa.Select[Any]:
    """Whether anything was ever logged for the collection."""
    q = table.c
    return sa.select(sa.exists().where(q.collection == collection))


def log_ever_written(table: sa.Table = query_log) -> sa.Select[Any]:
    """Whether a row was ever written to the log table, pruned or not: its id sequence was
    used (NULL-free: false before the first row). Needs USAGE or SELECT on the sequence."""
    name = table.name if table.schema is None else f"{table.schema}.{table.name}"
    sequence = sa.func.pg_get_serial_sequence(name, "id")
    return sa.select(sa.func.pg_sequence_last_value(sa.cast(sequence, REGCLASS)).is_not(None))


def _window(q: Any, collection: str, start: dt.datetime, end: dt.datetime | None) -> list[sa.ColumnElement[bool]]:
    conditions = [q.collection == collection, q.created_at >= start]
    if end is not None:
        conditions.append(q.created_at < end)
    return conditions


def _percentile(fraction: float, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.percentile_cont(fraction).within_group(column)


def _answer_rate(q: Any) -> sa.ColumnElement[Any]:
    # Over FAQ questions only (plain searches have answered NULL): NULL when there were none.
    return sa.func.avg(sa.case((q.answered, 1.0), else_=0.0)).filter(q.answered.is_not(None))


def window_summary(
    collection: str, start: dt.datetime, end: dt.datetime | None, table: sa.Table = query_log
) -> sa.Select[Any]:
    """(queries, FAQ questions, latency p50, latency p95, answer rate, mean top-1 score) of one window."""
    q = table.c
    return sa.select(
        sa.func.count(),
        sa.func.count(q.answered),
        _percentile(0.5, q.latency_ms),
        _percentile(0.95, q.latency_ms),
        _answer_rate(q),
        sa.func.avg(q.top_score),
    ).where(*_window(q, collection, start, end))


def daily_series(
    collection: str, start: dt.datetime, end: dt.datetime | None, table: sa.Table = query_log
) -> sa.Select[Any]:
    """Per UTC day: (day, queries, latency p50, latency p95, answer rate, mean top-1 score)."""
    q = table.c
    day = sa.func.date_trunc("day", sa.func.timezone("UTC", q.created_at)).label("day")
    return (
        sa.select(
            day,
            sa.func.count(),
            _percentile(0.5, q.latency_ms),
            _percentile(0.95, q.latency_ms),
            _answer_rate(q),
            sa.func.avg(q.top_score),
        )
        .where(*_window(q, collection, start, end))
        .group_by(day)
        .order_by(day)
    )


def top_scores(
    collection: str, start: dt.datetime, end: dt.datetime | None, limit: int, table: sa.Table = query_log
) -> sa.Select[Any]:
    """The top-1 scores of a window: all of them, or a uniform sample of ``limit`` when there are more."""
    q = table.c
    return (
        sa.select(q.top_score)
        .where(*_window(q, collection, start, end), q.top_score.is_not(None))
        .order_by(sa.func.random())
        .limit(limit)
    )


def log_models(
    collection: str, start: dt.datetime, end: dt.datetime | None, table: sa.Table = query_log
) -> sa.Select[Any]:
    """(encoder model, queries) of a window, most used first."""
    q = table.c
    return (
        sa.select(q.model_name, sa.func.count())
        .where(*_window(q, collection, start, end), q.model_name.is_not(None))
        .group_by(q.model_name)
        .order_by(sa.func.count().desc(), q.model_name)
    )


def unanswered_queries(
    collection: str, start: dt.datetime, model: str, *, below: float | None, limit: int, table: sa.Table = query_log
) -> sa.Select[Any]:
    """The distinct unresolved unanswered queries of a window, one row per query hash: (hash,
    text, vector, times asked, last asked), most asked first, at most ``limit``.

    Unanswered: an FAQ question that got no answer, or (``below``) any query whose top-1 score
    was below it or that found nothing.
    """
    q = table.c
    unanswered: sa.ColumnElement[bool] = q.answered.is_(False)
    if below is not None:
        unanswered = sa.or_(unanswered, sa.func.coalesce(q.top_score, -1e9) < below)
    conditions = [*_window(q, collection, start, None), q.resolved_at.is_(None), q.model_name == model, unanswered]
    times = sa.func.count().over(partition_by=q.query_hash)
    last = sa.func.max(q.created_at).over(partition_by=q.query_hash)
    rows = (
        sa.select(
            q.query_hash,
            q.query_text,
            q.embedding,
            times.label("times"),
            last.label("last_asked"),
        )
        .where(*conditions, q.embedding.is_not(None))
        .ext(distinct_on(q.query_hash))
        .order_by(q.query_hash, q.query_text.is_(None), q.created_at.desc())
        .subquery()
    )
    return sa.select(rows).order_by(rows.c.times.desc(), rows.c.last_asked.desc()).limit(limit)


def unanswered_models(collection: str, start: dt.datetime, table: sa.Table = query_log) -> sa.Select[Any]:
    """(model, unresolved unanswered rows) of a window, most first."""
    q = table.c
    return (
        sa.select(q.model_name, sa.func.count())
        .where(*_window(q, collection, start, None), q.resolved_at.is_(None), q.embedding.is_not(None))
        .group_by(q.model_name)
        .order_by(sa.func.count().desc())
    )


def _hashes(hashes: Sequence[str]) -> sa.BindParameter[Any]:
    return sa.bindparam(None, list(hashes), type_=ARRAY(sa.Text))


def lock_unresolved(collection: str, hashes: Sequence[str], table: sa.Table = query_log) -> sa.Select[Any]:
    """Lock the unresolved rows of these queries (a second promoter waits, then finds none)."""
    q = table.c
    return (
        sa.select(q.id)
        .where(q.collection == collection, q.query_hash == sa.any_(_hashes(hashes)), q.resolved_at.is_(None))
        .with_for_update()
    )


def resolved_queries(collection: str, hashes: Sequence[str], table: sa.Table = query_log) -> sa.Select[Any]:
    """(resolved as, resolved at) of the latest resolved row among these queries."""
    q = table.c
    return (
        sa.select(q.resolved_as, q.resolved_at)
        .where(q.collection == collection, q.query_hash == sa.any_(_hashes(hashes)), q.resolved_at.is_not(None))
        .order_by(q.resolved_at.desc())
        .limit(1)
    )


def resolve_queries(ids: Sequence[int], resolved_as: str, table: sa.Table = query_log) -> sa.Update:
    """Mark rows resolved (they leave the unanswered list)."""
    q = table.c
    return (
        sa.update(table)
        .where(q.id == sa.any_(sa.bindparam(None, list(ids), type_=ARRAY(sa.BigInteger))))
        .values(resolved_at=sa.func.now(), resolved_as=resolved_as)
    )


def prune_log(before: dt.datetime, batch: int, collection: str | None = None, table: sa.Table = query_log) -> sa.Delete:
    """Delete up to ``batch`` rows logged before ``before`` (a loop of short transactions, so a
    large prune never holds one long lock)."""
    q = table.c
    conditions = [q.created_at < before]
    if collection is not None:
        conditions.append(q.collection == collection)
    oldest = sa.select(q.id).where(*conditions).limit(batch).scalar_subquery()
    return sa.delete(table).where(q.id.in_(oldest))


def count_before(before: dt.datetime, collection: str | None = None, table: sa.Table = query_log) -> sa.Select[Any]:
    q = table.c
    conditions = [q.created_at < before]
    if collection is not None:
        conditions.append(q.collection == collection)
    return sa.select(sa.func.count()).where(*conditions)
