"""Retention: delete log rows older than a cutoff, in short batches with a progress bar."""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from semsim_pg import queries
from semsim_pg.progress import progress_bar
from semsim_pg.queries import tables

__all__ = ["prune"]

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
) -> int:
    """Delete the rows logged before ``before`` (of one collection, or all); returns how many."""
    table = tables.query_log if table is None else table
    with engine.connect() as conn:
        total = int(conn.execute(queries.count_before(before, collection, table)).scalar_one())
    deleted = 0
    with progress_bar(progress, total=total, desc="pruning query log", unit="rows") as bar:
        while deleted < total:
            with engine.begin() as conn:
                n = conn.execute(queries.prune_log(before, PRUNE_BATCH, collection, table)).rowcount
            if not n:
                break
            deleted += n
            bar.update(n)
    logger.info("query log: pruned %d rows logged before %s", deleted, before.isoformat())
    return deleted
