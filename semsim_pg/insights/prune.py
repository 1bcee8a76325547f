"""Retention: delete log rows older than a cutoff, in short batches with a progress bar
(``semsim log prune`` and Django's ``manage.py semsim_log_prune``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.errors import CollectionNotFound, SchemaNotInstalled
from semsim_pg.insights.periods import parse_duration
from semsim_pg.progress import progress_bar
from semsim_pg.queries import tables
from semsim_pg.validation import visible

__all__ = ["Pruned", "prune", "prune_older_than"]

logger = logging.getLogger(__name__)

#: rows deleted per transaction: a large prune never holds one long lock on the log
PRUNE_BATCH = 10_000

_UNDEFINED_TABLE = "42P01"  # SQLSTATE of "relation ... does not exist"


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
    ``file``: the stream the progress bar draws on (default stderr).

    SchemaNotInstalled when the log table does not exist (its migrations never ran there);
    CollectionNotFound for a ``collection`` of semsim's log (``table`` None) that is neither a
    collection nor in the log: a typo in a cron line would prune nothing, every night, silently."""
    core = table is None
    table = tables.query_log if table is None else table
    with connect(engine) as conn, _table_missing(table):
        total = int(conn.execute(queries.count_before(before, collection, table)).scalar_one())
        if core and collection is not None and not total and not conn.scalar(queries.has_log(collection, table)):
            _refuse_unknown(conn, collection)
    deleted = 0
    with progress_bar(progress, total=total, desc="pruning query log", unit="rows", file=file) as bar:
        while deleted < total:
            with connect(engine) as conn, conn.begin():
                n = conn.execute(queries.prune_log(before, PRUNE_BATCH, collection, table)).rowcount
            if not n:
                break
            deleted += n
            bar.update(n)
    logger.info("query log: pruned %d rows logged before %s", deleted, before.isoformat())
    return deleted


@contextmanager
def _table_missing(table: sa.Table) -> Iterator[None]:
    """The log table missing, in one line: not a page of SQLAlchemy traceback."""
    try:
        yield
    except sa.exc.ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != _UNDEFINED_TABLE:
            raise
        name = table.name if table.schema is None else f"{table.schema}.{table.name}"
        raise SchemaNotInstalled(
            f"The query log table {name} does not exist in this database: run the migrations first (`manage.py "
            "migrate` for the Django app's log, `semsim db upgrade` for semsim's); nothing was pruned."
        ) from None


def _refuse_unknown(conn: Connection, collection: str) -> None:
    from semsim_pg.store.catalog import find_collection, list_collections

    if find_collection(conn, collection) is not None:
        return  # a collection that logged nothing (yet): nothing to prune, nothing wrong
    known = ", ".join(visible(c.name) for c in list_collections(conn)) or "none yet"
    raise CollectionNotFound(
        f"No collection named {collection!r} (collections: {known}), and the query log holds none of its "
        "queries: nothing was pruned."
    )


@dataclass(frozen=True)
class Pruned:
    """What a prune by age did, as both commands print it."""

    deleted: int
    older_than: str
    before: dt.datetime
    collection: str | None
    #: the log holds no query of ``collection`` at all (a label of the Django app's log; semsim's
    #: refuses a name that is no collection): a typo, most likely
    unknown: bool = False

    def to_dict(self) -> dict[str, Any]:
        found = {"deleted": self.deleted, "before": self.before.isoformat(), "collection": self.collection}
        return found | ({"warning": self.warning} if self.unknown else {})

    @property
    def warning(self) -> str:
        return f"the log holds no query of {self.collection!r} (a typo in the name?)"

    def summary(self) -> str:
        scope = f" of {visible(self.collection)}" if self.collection else ""
        return (
            f"pruned {self.deleted} logged queries{scope} older than {self.older_than} "
            f"(before {self.before:%Y-%m-%d %H:%M} UTC)" + (f"; warning: {self.warning}" if self.unknown else "")
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
    unknown = False
    if table is not None and collection is not None and not deleted:
        # a label of the Django app's log is in no catalog (prune refuses an unknown collection of
        # semsim's): one the log holds nothing of, a typo most likely, gets a warning
        with connect(engine) as conn:
            unknown = not conn.scalar(queries.has_log(collection, table))
    return Pruned(deleted, older_than, before, collection, unknown)
