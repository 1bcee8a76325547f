"""Reading a collection's vectors out of PostgreSQL for FAISS: streamed in id order, a training
sample, the count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from semsim_pg import queries
from semsim_pg.db import connect, vector_connection
from semsim_pg.errors import DimensionMismatch, InvalidInput
from semsim_pg.sql import to_array

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = [
    "Matrix",
    "count_vectors",
    "normalised",
    "sample_vectors",
    "stream_vectors",
    "training_sample",
]

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
    refuse_passages(coll)
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}.")
    after = 0
    while True:
        with connect(store.engine) as conn:
            vector_connection(conn)  # vectors arrive as NumPy arrays
            rows = conn.execute(queries.stream_embeddings(coll.id, coll.model_name, after, batch_size)).all()
            conn.rollback()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.stack([to_array(r[2]) for r in rows])
        if vectors.shape[1] != coll.dimension:
            raise DimensionMismatch(
                f"Collection {coll.name!r} says {coll.dimension} dimensions but holds {vectors.shape[1]}-dimensional "
                f"vectors for model {coll.model_name}: re-embed it."
            )
        if normalise:
            vectors = normalised(vectors)
        yield ids, [str(r[1]) for r in rows], vectors
        after = int(ids[-1])


def refuse_passages(coll: Collection) -> None:
    """A FAISS index holds one vector per document (its id is the document's); a collection
    whose texts are split into passages has several, which a FAISS search would return as
    duplicates. Its search belongs to PostgreSQL (each document once, by its best passage)."""
    if coll.chunk_size is not None:
        raise InvalidInput(
            f"Collection {coll.name!r} splits its texts into passages ({coll.chunk_size} tokens): FAISS builds "
            "hold one vector per document. Search it with semsim search, or build FAISS from a collection "
            "ingested without --chunk."
        )


def normalised(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def sample_vectors(store: DocumentStore, coll: Collection, n: int, *, seed: str = "") -> tuple[Matrix, list[str]]:
    """Up to ``n`` stored vectors and their external ids, in a pseudo-random order that a ``seed``
    repeats (ordered by a hash of the id, not by insertion, so a sample spans the collection)."""
    refuse_passages(coll)
    with connect(store.engine) as conn:
        vector_connection(conn)
        rows = conn.execute(queries.sample_embeddings(coll.id, coll.model_name, n, seed)).all()
        conn.rollback()
    vectors = np.stack([to_array(r[1]) for r in rows]) if rows else np.zeros((0, coll.dimension), np.float32)
    return np.ascontiguousarray(vectors, dtype=np.float32), [str(r[0]) for r in rows]


def training_sample(store: DocumentStore, coll: Collection, size: int, normalise: bool) -> Matrix:
    """A deterministic pseudo-random sample for k-means."""
    sample, _ = sample_vectors(store, coll, size)
    return normalised(sample) if normalise else sample


def count_vectors(store: DocumentStore, coll: Collection) -> int:
    with connect(store.engine) as conn:
        return int(conn.execute(queries.vector_count(coll.id, coll.model_name)).scalar_one())
