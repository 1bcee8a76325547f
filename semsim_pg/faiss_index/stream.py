"""Reading a collection's vectors out of PostgreSQL for FAISS: streamed in id order, a training
sample, the count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from semsim_pg.db import connect, vector_connection
from semsim_pg.errors import DimensionMismatch, InvalidInput

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = ["Matrix", "as_array", "count_vectors", "normalised", "stream_vectors", "training_sample"]

Matrix = npt.NDArray[np.float32]


def stream_vectors(
    store: DocumentStore,
    collection: str | Collection,
    *,
    batch_size: int = 5000,
    normalise: bool = False,
) -> Iterator[tuple[npt.NDArray[np.int64], list[str], Matrix]]:
    """(document ids, external ids, vectors) of a collection's current model, in id order.

    Keyset pagination on ``document_id`` (the primary key's first column): each batch is one
    short query, nothing is held open between batches and memory is bounded by ``batch_size``.
    """
    coll = store.get_collection(collection)
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}.")
    after = 0
    statement = (
        "SELECT e.document_id, d.external_id, e.embedding FROM semsim.embeddings e"
        " JOIN semsim.documents d ON d.id = e.document_id"
        " WHERE e.collection_id = %(cid)s AND e.model_name = %(model)s AND e.document_id > %(after)s"
        " ORDER BY e.document_id LIMIT %(n)s"
    )
    while True:
        with connect(store.engine) as conn:
            raw = vector_connection(conn)
            with raw.cursor() as cur:
                cur.execute(statement, {"cid": coll.id, "model": coll.model_name, "after": after, "n": batch_size})
                rows = cur.fetchall()
            conn.rollback()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.stack([as_array(r[2]) for r in rows])
        if vectors.shape[1] != coll.dimension:
            raise DimensionMismatch(
                f"Collection {coll.name!r} says {coll.dimension} dimensions but holds {vectors.shape[1]}-dimensional "
                f"vectors for model {coll.model_name}: re-embed it."
            )
        if normalise:
            vectors = normalised(vectors)
        yield ids, [str(r[1]) for r in rows], vectors
        after = int(ids[-1])


def as_array(value: Any) -> Matrix:
    """pgvector's Python type (``Vector``) or an array, as float32."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def normalised(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def training_sample(store: DocumentStore, coll: Collection, size: int, normalise: bool) -> Matrix:
    """A deterministic pseudo-random sample for k-means (ordered by a hash of the id, not by insertion)."""
    with connect(store.engine) as conn:
        raw = vector_connection(conn)
        with raw.cursor() as cur:
            cur.execute(
                "SELECT e.embedding FROM semsim.embeddings e"
                " WHERE e.collection_id = %(cid)s AND e.model_name = %(model)s"
                " ORDER BY md5(e.document_id::text) LIMIT %(n)s",
                {"cid": coll.id, "model": coll.model_name, "n": size},
            )
            rows = cur.fetchall()
        conn.rollback()
    sample = np.stack([as_array(r[0]) for r in rows]) if rows else np.zeros((0, coll.dimension), np.float32)
    return normalised(sample) if normalise else np.ascontiguousarray(sample, dtype=np.float32)


def count_vectors(store: DocumentStore, coll: Collection) -> int:
    with connect(store.engine) as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM semsim.embeddings WHERE collection_id = :cid AND model_name = :model"),
                {"cid": coll.id, "model": coll.model_name},
            ).scalar_one()
        )
