"""Index management: build, drop and inspect a collection's HNSW index (the store and reembed share it)."""

from __future__ import annotations

import dataclasses
import logging
import time

from sqlalchemy.engine import Connection, Engine

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.store.types import Collection

__all__ = ["INDEX_BUILD_MEMORY", "build_index", "drop_collection_indexes", "drop_index", "index_state"]

logger = logging.getLogger(__name__)

#: the graph builds far faster when it fits in maintenance_work_mem
INDEX_BUILD_MEMORY = "512MB"


def index_state(conn: Connection, coll: Collection, model: str | None = None) -> str:
    """``valid``, ``invalid`` (an interrupted CONCURRENTLY build left it) or ``missing``."""
    name = queries.index_name(coll.id, coll.model_name if model is None else model)
    valid = conn.execute(queries.index_validity(name)).scalar()
    return "missing" if valid is None else "valid" if valid else "invalid"


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
        with connect(engine) as conn, conn.begin():
            conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
            conn.exec_driver_sql(statement)
    else:
        with connect(engine) as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            state = index_state(conn, target)
            if state == "invalid":
                logger.warning("dropping the invalid index %s an interrupted build left behind", name)
                conn.exec_driver_sql(queries.drop_index(name, concurrently=True))
            if state == "valid":
                return
            conn.exec_driver_sql(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
            try:
                conn.exec_driver_sql(statement)
            finally:
                conn.exec_driver_sql("RESET maintenance_work_mem")
    logger.info("HNSW index %s of %s ready in %.1f s", name, coll.name, time.perf_counter() - start)


def drop_index(engine: Engine, coll: Collection, *, model: str | None = None, concurrently: bool = False) -> None:
    name = queries.index_name(coll.id, coll.model_name if model is None else model)
    if concurrently:
        with connect(engine) as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                queries.drop_index(name, concurrently=True)
            )
    else:
        with connect(engine) as conn, conn.begin():
            conn.exec_driver_sql(queries.drop_index(name))


def drop_collection_indexes(conn: Connection, collection_id: int) -> None:
    """Drop every model's index of a collection, inside the caller's transaction."""
    for name in conn.execute(queries.collection_indexes(collection_id)).scalars().all():
        conn.exec_driver_sql(queries.drop_index(name))
