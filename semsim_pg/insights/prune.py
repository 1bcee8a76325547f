"""Retention: delete log rows older than a cutoff, in short batches with a progress bar
(``semsim log prune`` and Django's ``manage.py semsim_log_prune``)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from semsim_pg import queries
from semsim_pg.insights.periods import parse_duration
from semsim_pg.progress import progress_bar
from semsim_pg.queries import tables

__all__ = ["Pruned", "prune", "prune_older_than"]

logger = logging.getLogger(__name__)

#: rows deleted per transaction: a large prune never holds one long lock on the log
PRUNE_BATCH = 10_000


def prune(
    engine: Engine,
    before: dt.datetime,
    *,
    collection: str | None = None,
    progress: bool | None = None,
    table: sa.Table | None = None,
    file: Any = None,
) -> int:
    """Delete the rows logged before ``before`` (of one collection, or all); returns how many.
    ``file``: the stream the progress bar draws on (default stderr)."""
    table = tables.query_log if table is None else table
    with engine.connect() as conn:
        total = int(conn.execute(queries.count_before(before, collection, table)).scalar_one())
    deleted = 0
    with progress_bar(progress, total=total, desc="pruning query log", unit="rows", file=file) as bar:
        while deleted < total:
            with engine.begin() as conn:
                n = conn.execute(queries.prune_log(before, PRUNE_BATCH, collection, table)).rowcount
            if not n:
                break
            deleted += n
            bar.update(n)
    logger.info("query log: pruned %d rows logged before %s", deleted, before.isoformat())
    return deleted


@dataclass(frozen=True)
class Pruned:
    """What a prune by age did, as both commands print it."""

    deleted: int
    older_than: str
    before: dt.datetime
    collection: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "before": self.before.isoformat(), "collection": self.collection}

    def summary(self) -> str:
        scope = f" of {self.collection}" if self.collection else ""
        return (
            f"pruned {self.deleted} logged queries{scope} older than {self.older_than} "
            f"(before {self.before:%Y-%m-%d %H:%M} UTC)"
        )


def prune_older_than(
    engine: Engine,
    older_than: str,
    *,
    collection: str | None = None,
    progress: bool | None = None,
    table: sa.Table | None = None,
    file: Any = None,
) -> Pruned:
    """Delete the rows older than ``older_than`` as people type it (``90d``, ``12w``: at most
    100000d, refused as ``--older-than`` otherwise), of one collection or all."""
    before = dt.datetime.now(dt.UTC) - parse_duration(older_than, "--older-than")
    deleted = prune(engine, before, collection=collection, progress=progress, table=table, file=file)
    return Pruned(deleted, older_than, before, collection)
