"""Index management: build, drop, inspect, restore and warm a collection's HNSW index (the
store and reembed share it).

A large load drops the index and builds it at the end (faster than growing the graph row by
row). A load killed in between (kill -9, a lost machine) leaves the collection without its
index: searches still answer, by a slow exact scan. So a load marks itself as running with a
session advisory lock, which dies with its process, and :func:`ensure_index` tells a missing
index of a running load (``loading``, leave it) from one a dead load left behind (rebuild it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.errors import InvalidInput, QueryCanceled
from semsim_pg.store.types import Collection

__all__ = [
    "INDEX_BUILD_MEMORY",
    "INDEX_STATES",
    "IndexWarmup",
    "build_index",
    "build_lock_transaction",
    "bulk_load",
    "drop_collection_indexes",
    "drop_index",
    "drop_leftover_index",
    "ensure_index",
    "index_state",
    "leftover_index",
    "rebuild_index",
    "warm_index",
]

logger = logging.getLogger(__name__)

#: the graph builds far faster when it fits in maintenance_work_mem
INDEX_BUILD_MEMORY = "512MB"
#: how long dropping the unfinished index of an interrupted rebuild waits for the table's lock
#: (searches queue behind that wait) before it leaves the index to the next rebuild
UNFINISHED_DROP_LOCK_TIMEOUT = "5s"
#: how long the swap of a rebuild waits for the table's ACCESS EXCLUSIVE lock (behind a long
#: reader or writer) per try: every search and write of every collection queues behind that wait
SWAP_LOCK_TIMEOUT = "3s"
#: tries of the swap, with a pause of 1, 2, ... s between them, before the rebuild gives up
SWAP_ATTEMPTS = 3
#: the pause between two tries of the index-build lock (taken without waiting: see
#: :func:`queries.try_lock_index_build`)
BUILD_LOCK_POLL_S = 0.5
#: valid; loading (a running bulk load builds it at its end); missing or invalid (rebuild it)
INDEX_STATES = ("valid", "loading", "missing", "invalid")


def index_state(conn: Connection, coll: Collection, model: str | None = None) -> str:
    """One of :data:`INDEX_STATES` for the collection's (or ``model``'s) index."""
    name = queries.index_name(coll.id, coll.model_name if model is None else model)
    valid = conn.execute(queries.index_validity(name)).scalar()
    if valid:
        return "valid"
    if conn.execute(queries.bulk_load_running(coll.id)).scalar():
        return "loading"
    return "missing" if valid is None else "invalid"


def leftover_index(conn: Connection, coll: Collection) -> str | None:
    """The name of the index an interrupted rebuild left beside the collection's own (``..._new``:
    a kill -9, or a swap that gave up), else None. Valid, searches may use it; valid or not, every
    insert writes to it."""
    staging = queries.staging_index_name(coll.id, coll.model_name)
    return staging if conn.execute(queries.index_validity(staging)).first() is not None else None


def drop_leftover_index(engine: Engine, coll: Collection) -> str | None:
    """Drop :func:`leftover_index` (CONCURRENTLY: searches and writes go on) unless an index build
    is running (it may be that rebuild's); the name dropped, else None."""
    with connect(engine) as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        name = leftover_index(conn, coll)
        if name is None or not conn.execute(queries.try_hold_index_build()).scalar():
            return None
        try:
            logger.warning("dropping the index %s an interrupted rebuild of %s left behind", name, coll.name)
            conn.exec_driver_sql(queries.drop_index(name, concurrently=True))
        finally:
            if not conn.invalidated:
                conn.execute(queries.release_index_build())
    return name


def ensure_index(engine: Engine, coll: Collection) -> bool:
    """Rebuild the collection's index if a dead load (or a failed build) left it missing or
    invalid; True when it did. An interrupted rebuild's leftover index is dropped meanwhile."""
    with connect(engine) as conn:
        state = index_state(conn, coll)
        leftover = leftover_index(conn, coll)
    if leftover is not None:
        drop_leftover_index(engine, coll)
    if state in ("valid", "loading"):
        return False
    logger.warning(
        "collection %s had no valid HNSW index (%s: a bulk load was interrupted?); rebuilding it", coll.name, state
    )
    if state == "invalid":
        drop_index(engine, coll)
    build_index(engine, coll)
    return True


@contextmanager
def bulk_load(engine: Engine, coll: Collection) -> Iterator[None]:
    """Drop the index for a load and build it at the end, even after a failed load; the load is
    marked running meanwhile (a session lock, released by the end of the process at the latest)."""
    with connect(engine) as marker:
        marker.execute(queries.hold_bulk_load(coll.id))
        marker.commit()
        try:
            drop_index(engine, coll)
            logger.info("dropped the HNSW index of %s for a bulk load; it is rebuilt at the end", coll.name)
            yield
        finally:
            marker.execute(queries.release_bulk_load(coll.id))
            marker.commit()


def build_index(
    engine: Engine,
    coll: Collection,
    *,
    model: str | None = None,
    dimension: int | None = None,
    concurrently: bool = False,
) -> None:
    """Build the HNSW index of ``model`` (default: the collection's) vectors if it is missing.

    ``concurrently`` lets writes to the table go on meanwhile (reembed); an invalid index that
    an interrupted concurrent build left behind is dropped and built again."""
    target = dataclasses.replace(
        coll,
        model_name=coll.model_name if model is None else model,
        dimension=coll.dimension if dimension is None else dimension,
    )
    statement = queries.create_index(target, coll.hnsw_m, coll.hnsw_ef_construction, concurrently=concurrently)
    name = queries.index_name(target.id, target.model_name)
    start = time.perf_counter()
    if not concurrently:
        with build_lock_transaction(engine) as conn:  # a second builder waits, then finds it built
            conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
            conn.exec_driver_sql(statement)
    else:
        with connect(engine) as conn, _build_lock(conn.execution_options(isolation_level="AUTOCOMMIT")) as conn:
            valid = conn.execute(queries.index_validity(name)).scalar()
            if valid:
                return
            if valid is False:
                logger.warning("dropping the invalid index %s an interrupted build left behind", name)
                conn.exec_driver_sql(queries.drop_index(name, concurrently=True))
            conn.exec_driver_sql(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
            try:
                conn.exec_driver_sql(statement)
            finally:
                conn.exec_driver_sql("RESET maintenance_work_mem")
    logger.info("HNSW index %s of %s ready in %.1f s", name, coll.name, time.perf_counter() - start)


def rebuild_index(engine: Engine, coll: Collection, *, m: int, ef_construction: int) -> None:
    """Build the collection's index afresh with ``m`` and ``ef_construction`` and make those the
    collection's, in one step: the old index answers searches until the new one is valid.

    The new index is built CONCURRENTLY under another name, then swapped in by one short
    transaction (drop the old one, rename the new one, save the parameters). Not DROP and CREATE
    in one transaction, although that is atomic too: every collection's vectors share one table,
    and a dropped index holds an ACCESS EXCLUSIVE lock on it until the commit, so every search and
    write of every collection would wait for the whole build. Interrupted anywhere (Ctrl-C,
    SIGTERM, an error), the old index and parameters stay and the unfinished index is dropped
    (by the next rebuild if that cannot be done at once: a kill -9, a table locked too long)."""
    name = queries.index_name(coll.id, coll.model_name)
    staging = queries.staging_index_name(coll.id, coll.model_name)
    statement = queries.create_index(coll, m, ef_construction, concurrently=True, name=staging)
    start = time.perf_counter()
    with connect(engine) as conn, _build_lock(conn.execution_options(isolation_level="AUTOCOMMIT")) as conn:
        options = conn.execute(queries.index_options(staging)).first()
        if (
            options is not None
            and conn.execute(queries.index_validity(staging)).scalar()
            and (list(options[0] or []) == [f"m={int(m)}", f"ef_construction={int(ef_construction)}"])
        ):
            logger.info("reusing the finished index %s of an earlier rebuild with these parameters", staging)
        else:
            if options is not None:
                logger.warning("dropping the index %s an interrupted rebuild of %s left behind", staging, coll.name)
                conn.exec_driver_sql(queries.drop_index(staging, concurrently=True))
            conn.exec_driver_sql(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
            try:
                conn.exec_driver_sql(statement)
            except BaseException:
                _drop_unfinished(engine, staging)
                raise
            finally:
                if not conn.invalidated:
                    conn.exec_driver_sql("RESET maintenance_work_mem")
        _swap(engine, coll, staging, m=m, ef_construction=ef_construction)
    logger.info("HNSW index %s of %s rebuilt in %.1f s", name, coll.name, time.perf_counter() - start)


def _swap(engine: Engine, coll: Collection, staging: str, *, m: int, ef_construction: int) -> None:
    """Put the finished ``staging`` index in the place of the collection's, with its parameters, in
    one short transaction. Its DROP waits for the table's ACCESS EXCLUSIVE lock, and every search
    and write queues behind that wait: so it waits :data:`SWAP_LOCK_TIMEOUT` at most, a few
    times, then gives up and keeps ``staging`` for the next rebuild (which swaps it in at once)."""
    name = queries.index_name(coll.id, coll.model_name)
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            with connect(engine) as swap, swap.begin():
                swap.exec_driver_sql(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
                swap.exec_driver_sql(queries.drop_index(name))
                swap.exec_driver_sql(queries.rename_index(staging, name))
                swap.execute(queries.set_index_parameters(coll.id, m, ef_construction))
            return
        except QueryCanceled as exc:
            if "lock timeout" not in str(exc):
                _drop_unfinished(engine, staging)
                raise
            if attempt == SWAP_ATTEMPTS:
                raise QueryCanceled(
                    f"The new index of collection {coll.name!r} is built, but it could not be swapped in: another "
                    f"session held the embeddings table ({SWAP_ATTEMPTS} waits of {SWAP_LOCK_TIMEOUT}; a long "
                    "transaction?). The old index still answers; the new one is kept as "
                    f"{staging}: run `semsim index rebuild -c {coll.name}` with the same parameters again to swap it in."
                ) from None
            logger.info("the table was busy (%s); trying the swap again (%d/%d)", exc, attempt + 1, SWAP_ATTEMPTS)
            time.sleep(attempt)  # backoff between tries, not a timing guarantee
        except BaseException:
            _drop_unfinished(engine, staging)
            raise


@contextmanager
def _build_lock(conn: Connection) -> Iterator[Connection]:
    """Hold the one index-build lock for the session of ``conn`` (autocommit: no transaction is
    open while it waits, see :func:`queries.try_lock_index_build`), released at the end; an
    interrupted statement leaves the connection invalidated (closed), and the lock went with it."""
    waited = False
    while not conn.execute(queries.try_hold_index_build()).scalar():
        if not waited:
            logger.warning("waiting for another index build on the embeddings table to end")
            waited = True
        time.sleep(BUILD_LOCK_POLL_S)
    try:
        yield conn
    finally:
        if not conn.invalidated:
            conn.execute(queries.release_index_build())


@contextmanager
def build_lock_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the index-build lock: one that builds or drops an index. While the
    lock is taken, the transaction is rolled back and none is open (else a running build
    CONCURRENTLY would wait for it while it waits for the build: a deadlock)."""
    waited = False
    while True:
        with connect(engine) as conn:
            with conn.begin():
                if conn.execute(queries.try_lock_index_build()).scalar():
                    yield conn
                    return
        if not waited:
            logger.warning("waiting for another index build on the embeddings table to end")
            waited = True
        time.sleep(BUILD_LOCK_POLL_S)


def _drop_unfinished(engine: Engine, name: str) -> None:
    """Drop the index an interrupted rebuild left (invalid, yet written to by every insert)."""
    try:
        with connect(engine) as conn, conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{UNFINISHED_DROP_LOCK_TIMEOUT}'")
            conn.exec_driver_sql(queries.drop_index(name))
    except Exception as exc:  # the interruption that brought us here is what the caller reports
        logger.warning("could not drop the unfinished index %s (%s); the next index rebuild drops it", name, exc)


def drop_index(engine: Engine, coll: Collection, *, model: str | None = None, concurrently: bool = False) -> None:
    name = queries.index_name(coll.id, coll.model_name if model is None else model)
    if concurrently:  # under the build lock: it waits for the table as a build CONCURRENTLY does
        with connect(engine) as conn, _build_lock(conn.execution_options(isolation_level="AUTOCOMMIT")) as conn:
            conn.exec_driver_sql(queries.drop_index(name, concurrently=True))
    else:
        with connect(engine) as conn, conn.begin():
            conn.exec_driver_sql(queries.drop_index(name))


def drop_collection_indexes(conn: Connection, collection_id: int) -> None:
    """Drop every model's index of a collection and the index of its words, inside the caller's
    transaction."""
    for name in conn.execute(queries.collection_indexes(collection_id)).scalars().all():
        conn.exec_driver_sql(queries.drop_index(name))
    conn.exec_driver_sql(queries.drop_index(queries.text_index_name(collection_id)))


@dataclasses.dataclass(frozen=True)
class IndexWarmup:
    """What :func:`warm_index` read into PostgreSQL's shared buffers."""

    collection: str
    index: str
    #: ``pg_prewarm`` where the database has the extension, else ``index scan``
    method: str
    #: the index's size in bytes, and the server's shared_buffers: an index larger than those
    #: cannot stay whole in PostgreSQL's own memory (the operating system's cache still helps)
    index_bytes: int
    shared_buffers_bytes: int
    #: vectors the index scan returned, of ``vectors`` (None for pg_prewarm, which reads blocks)
    visited: int | None
    vectors: int
    seconds: float

    @property
    def fits(self) -> bool:
        return self.index_bytes <= self.shared_buffers_bytes


def warm_index(engine: Engine, coll: Collection) -> IndexWarmup:
    """Read the collection's HNSW index into PostgreSQL's shared buffers, so that the first
    searches after a server restart do not read it from disk page by page (at 100,000 vectors
    that doubled the first searches' p50 and tripled their p95). With pg_prewarm when the
    database has it, else by an ordered scan of the whole index (:func:`queries.index_traversal`,
    about 1 s per 100,000 vectors on 2 cores)."""
    name = queries.index_name(coll.id, coll.model_name)
    start = time.perf_counter()
    with connect(engine) as conn, conn.begin():
        state = index_state(conn, coll)
        if state != "valid":
            how = (
                "a bulk load is building it: warm it when the load has ended"
                if state == "loading"
                else f"build it first with `semsim index rebuild {coll.name}`"
            )
            raise InvalidInput(f"Collection {coll.name!r} has no valid HNSW index to warm ({state}): {how}.")
        size = int(conn.execute(queries.index_size(name)).scalar_one())
        buffers = int(conn.execute(queries.shared_buffers_bytes()).scalar_one())
        vectors = int(conn.execute(queries.vector_count(coll.id, coll.model_name)).scalar_one())
        visited: int | None = None
        if conn.execute(queries.pg_prewarm_installed()).scalar():
            method = "pg_prewarm"
            conn.execute(queries.pg_prewarm(name))
        else:
            method = "index scan"
            conn.execute(queries.traversal_settings())
            visited = int(conn.execute(queries.index_traversal(coll, vectors)).scalar_one())
    warmed = IndexWarmup(coll.name, name, method, size, buffers, visited, vectors, time.perf_counter() - start)
    if not warmed.fits:
        logger.warning(
            "the HNSW index of %s (%d MB) is larger than shared_buffers (%d MB): only part of it stays in "
            "PostgreSQL's memory; raise shared_buffers to keep it all",
            coll.name,
            size >> 20,
            buffers >> 20,
        )
    # An HNSW graph may leave a few elements unreachable: only a scan cut short by its memory
    # cap leaves many.
    if visited is not None and visited < 0.99 * vectors:
        logger.warning(
            "warming %s: the index scan stopped after %d of %d vectors (its memory cap); the rest is read on use",
            coll.name,
            visited,
            vectors,
        )
    logger.info("warmed the HNSW index of %s (%s) in %.1f s", coll.name, method, warmed.seconds)
    return warmed
