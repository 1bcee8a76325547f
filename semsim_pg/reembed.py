"""Move a collection to another model without downtime (ARCHITECTURE.md decision 2 and 4).

The new model's vectors go into the same companion table, ``semsim.embeddings``, as rows keyed
``(document_id, new model)``, beside the old ones; searches keep reading the old model's rows
(the collection still names it) while the new ones are written. Then:

1. the new (collection, model) partial HNSW index is built after the bulk load (faster than
   growing it row by row), ``CONCURRENTLY`` so that writes to the table go on meanwhile;
2. catch-up passes encode documents whose text changed during the run (their stored hash no
   longer matches the new vector's);
3. one short transaction switches: with writers to ``semsim.documents`` held off (readers are
   not), it checks that no document lacks a current new vector, then updates the collection's
   ``model_name`` and ``dimension``. From its commit on, searches use the new vectors;
4. the old model's rows are deleted in batches and its index dropped concurrently.

A run stopped anywhere resumes: each pass encodes only documents without a new vector for
their current text, so finished batches are never encoded again. Re-embedding to the model the
collection already uses removes rows other models left behind (an abandoned run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from semsim_pg import sql
from semsim_pg.db import connect
from semsim_pg.encoder import Encoder, get_encoder, resolve_model
from semsim_pg.errors import DatabaseError, DimensionMismatch, InvalidInput

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = ["ReembedResult", "reembed", "stale_count"]

logger = logging.getLogger(__name__)

# pgvector indexes vectors of up to 2,000 dimensions with HNSW.
MAX_INDEXED_DIMENSION = 2000
SWITCH_ATTEMPTS = 5


@dataclass
class ReembedResult:
    collection: str
    old_model: str
    new_model: str
    old_dimension: int
    new_dimension: int
    encoded: int = 0
    reused: int = 0
    passes: int = 0
    switched: bool = False
    removed_old_rows: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.switched:
            return (
                f"{self.collection}: already on {self.new_model}; removed {self.removed_old_rows} rows of other models"
            )
        return (
            f"{self.collection}: {self.old_model} ({self.old_dimension} dims) -> {self.new_model} "
            f"({self.new_dimension} dims); {self.encoded} documents encoded, {self.reused} kept from an earlier run, "
            f"{self.removed_old_rows} old vectors removed, in {self.seconds:.1f} s"
        )


def _missing_clause() -> str:
    # A document needs a new vector when it has none for the new model, or one of other text.
    return (
        " FROM semsim.documents d"
        " LEFT JOIN semsim.embeddings e ON e.document_id = d.id AND e.model_name = :model"
        " WHERE d.collection_id = :cid AND (e.document_id IS NULL OR e.text_hash <> d.text_hash)"
    )


def stale_count(conn: sa.Connection, collection_id: int, model: str) -> int:
    """Documents of the collection without a vector of ``model`` for their current text."""
    return int(
        conn.execute(
            sa.text("SELECT count(*)" + _missing_clause()), {"cid": collection_id, "model": model}
        ).scalar_one()
    )


def reembed(
    store: DocumentStore,
    collection: str | Collection,
    model: str,
    *,
    batch_size: int = 256,
    progress: bool | None = None,
    encoder: Encoder | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ReembedResult:
    """Re-encode every document of ``collection`` with ``model`` and switch the collection to it.

    ``encoder`` may be given for the new model (it must carry the name ``model`` resolves to);
    ``on_batch(n_encoded_so_far)`` runs after each written batch (progress reporting, tests).
    """
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}.")
    start = time.perf_counter()
    coll = store.get_collection(collection)
    new = encoder if encoder is not None else get_encoder(model, device=store.settings.device)
    wanted = resolve_model(model).name
    if new.name != wanted:
        raise InvalidInput(f"The encoder given is for model {new.name}, not {wanted}.")
    result = ReembedResult(coll.name, coll.model_name, new.name, coll.dimension, coll.dimension)
    if new.name == coll.model_name:
        result.removed_old_rows = _remove_other_models(store, coll)
        result.seconds = time.perf_counter() - start
        return result
    dimension = new.dimension
    result.new_dimension = dimension
    if dimension > MAX_INDEXED_DIMENSION:
        raise DimensionMismatch(
            f"Model {new.name} makes {dimension}-dimensional vectors; pgvector's HNSW index takes at most "
            f"{MAX_INDEXED_DIMENSION}. Choose a smaller model."
        )
    with connect(store.engine) as conn:
        todo = stale_count(conn, coll.id, new.name)
        total = int(
            conn.execute(
                sa.text("SELECT count(*) FROM semsim.documents WHERE collection_id = :cid"), {"cid": coll.id}
            ).scalar_one()
        )
    result.reused = total - todo
    logger.info("reembed %s: %d of %d documents to encode with %s", coll.name, todo, total, new.name)
    bar = _progress(progress, total=todo, desc=f"reembed {coll.name}", unit="doc")
    try:
        # First pass, then the index, then catch-up passes for texts changed meanwhile.
        result.encoded += _encode_pass(store, coll, new, batch_size, bar, on_batch, result.encoded)
        result.passes += 1
        _build_index(store, coll, new.name, dimension)
        for _attempt in range(SWITCH_ATTEMPTS):
            result.encoded += _encode_pass(store, coll, new, batch_size, bar, on_batch, result.encoded)
            result.passes += 1
            if _switch(store, coll, new.name, dimension):
                break
        else:
            raise DatabaseError(
                f"Collection {coll.name!r} kept changing faster than it could be re-embedded ({SWITCH_ATTEMPTS} "
                "catch-up passes). Run `semsim reembed` again when writes are quieter: finished work is kept."
            )
    finally:
        if bar is not None:
            bar.close()
    result.switched = True
    logger.info("collection %s now uses %s", coll.name, new.name)
    result.removed_old_rows = _remove_model(store, coll, coll.model_name)
    result.seconds = time.perf_counter() - start
    return result


def _encode_pass(
    store: DocumentStore,
    coll: Collection,
    encoder: Encoder,
    batch_size: int,
    bar: Any,
    on_batch: Callable[[int], None] | None,
    done: int,
) -> int:
    """Encode, in id order, every document lacking a current vector of the new model."""
    encoded = 0
    after = 0
    while True:
        with connect(store.engine) as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT d.id, d.text, d.text_hash" + _missing_clause() + " AND d.id > :after ORDER BY d.id LIMIT :n"
                ),
                {"cid": coll.id, "model": encoder.name, "after": after, "n": batch_size},
            ).all()
        if not rows:
            return encoded
        # Encode outside any transaction: no lock is held while the model runs.
        vectors = encoder.encode([r[1] for r in rows], batch_size=min(batch_size, encoder.batch_size))
        with connect(store.engine) as conn, conn.begin():
            # Compare-and-set: a vector lands only if its document still has the text it was made
            # from; a document changed meanwhile is left for the next pass.
            conn.execute(
                sa.text(
                    "INSERT INTO semsim.embeddings (document_id, model_name, collection_id, text_hash, embedding)"
                    " SELECT d.id, :model, :cid, d.text_hash, CAST(v.embedding AS vector)"
                    " FROM unnest(CAST(:ids AS bigint[]), CAST(:hashes AS text[]), CAST(:vectors AS text[]))"
                    "   AS v(id, text_hash, embedding)"
                    " JOIN semsim.documents d ON d.id = v.id AND d.text_hash = v.text_hash"
                    " ON CONFLICT (document_id, model_name) DO UPDATE"
                    "   SET text_hash = excluded.text_hash, embedding = excluded.embedding, created_at = now()"
                ),
                {
                    "model": encoder.name,
                    "cid": coll.id,
                    "ids": [int(r[0]) for r in rows],
                    "hashes": [r[2] for r in rows],
                    "vectors": [sql.vector_literal(v) for v in np.asarray(vectors, dtype=np.float32)],
                },
            )
        encoded += len(rows)
        after = int(rows[-1][0])
        if bar is not None:
            if bar.n + len(rows) > (bar.total or 0):
                bar.total = bar.n + len(rows)
            bar.update(len(rows))
        if on_batch is not None:
            on_batch(done + encoded)


def _build_index(store: DocumentStore, coll: Collection, model: str, dimension: int) -> None:
    """The new (collection, model) HNSW index, built CONCURRENTLY: writes go on meanwhile.

    A concurrent build that failed leaves an invalid index behind; it is dropped and rebuilt."""
    name = sql.index_name(coll.id, model)
    statement = sql.create_index_sql(coll.id, model, dimension, coll.metric, coll.hnsw_m, coll.hnsw_ef_construction)
    statement = statement.replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        valid = conn.execute(
            sa.text("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:name)"),
            {"name": f"semsim.{name}"},
        ).scalar()
        if valid is False:
            logger.warning("dropping the invalid index %s an interrupted build left behind", name)
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS semsim.{name}")
        if valid is not True:
            logger.info("building HNSW index %s", name)
            # The graph builds far faster when it fits in memory (PERFORMANCE.md).
            conn.exec_driver_sql("SET maintenance_work_mem = '512MB'")
            try:
                conn.exec_driver_sql(statement)
            finally:
                conn.exec_driver_sql("RESET maintenance_work_mem")


def _switch(store: DocumentStore, coll: Collection, model: str, dimension: int) -> bool:
    """The atomic switch; False (nothing changed) when documents changed since the last pass."""
    with connect(store.engine) as conn, conn.begin():
        current = conn.execute(
            sa.text("SELECT model_name FROM semsim.collections WHERE id = :cid FOR UPDATE"), {"cid": coll.id}
        ).scalar()
        if current != coll.model_name:
            raise DatabaseError(
                f"Collection {coll.name!r} moved from {coll.model_name} to {current} while this run went on "
                "(another reembed?). Nothing was switched; check `semsim collections`."
            )
        # SHARE blocks writers of documents (their text could change under the check), not readers.
        conn.exec_driver_sql("LOCK TABLE semsim.documents IN SHARE MODE")
        left = stale_count(conn, coll.id, model)
        if left:
            logger.info("%d documents changed during the pass; encoding them before the switch", left)
            conn.rollback()
            return False
        conn.execute(
            sa.text("UPDATE semsim.collections SET model_name = :model, dimension = :dim WHERE id = :cid"),
            {"model": model, "dim": dimension, "cid": coll.id},
        )
    return True


def _remove_model(store: DocumentStore, coll: Collection, model: str, batch: int = 5000) -> int:
    """Delete a model's rows of a collection in batches (short transactions), then drop its index."""
    removed = 0
    while True:
        with connect(store.engine) as conn, conn.begin():
            n = conn.execute(
                sa.text(
                    "DELETE FROM semsim.embeddings WHERE (document_id, model_name) IN ("
                    " SELECT document_id, model_name FROM semsim.embeddings"
                    " WHERE collection_id = :cid AND model_name = :model LIMIT :n)"
                ),
                {"cid": coll.id, "model": model, "n": batch},
            ).rowcount
        removed += int(n)
        if n < batch:
            break
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS semsim.{sql.index_name(coll.id, model)}")
    return removed


def _remove_other_models(store: DocumentStore, coll: Collection) -> int:
    with connect(store.engine) as conn:
        others = (
            conn.execute(
                sa.text(
                    "SELECT DISTINCT model_name FROM semsim.embeddings WHERE collection_id = :cid AND model_name <> :model"
                ),
                {"cid": coll.id, "model": coll.model_name},
            )
            .scalars()
            .all()
        )
    return sum(_remove_model(store, coll, other) for other in others)


def _progress(enabled: bool | None, **kwargs: Any) -> Any:
    if enabled is None:
        enabled = logger.getEffectiveLevel() <= logging.INFO
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(**kwargs)
