"""Statements on ``collections``: create, find, list with counts, lock, switch model, delete."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import REGCONFIG, insert

from semsim_pg.queries.tables import collections, documents, embeddings

__all__ = [
    "collection_current",
    "delete_collection",
    "find_collection",
    "insert_collection",
    "list_collections",
    "lock_collection_for_write",
    "lock_collection_model",
    "set_chunking",
    "set_collection_model",
    "set_index_parameters",
    "set_text_search_config",
    "vector_backends",
]

c = collections.c
#: the columns of :class:`semsim_pg.store.Collection`, in its field order
COLLECTION_COLUMNS = (c.id, c.name, c.model_name, c.dimension, c.metric, c.hnsw_m, c.hnsw_ef_construction, c.created_at)
#: read last, after the counts (the Collection's fields after them, in their order)
SEARCH_COLUMNS = (sa.cast(c.text_search_config, sa.Text).label("text_search_config"), c.chunk_size, c.chunk_overlap)


def insert_collection(
    name: str,
    model: str,
    dimension: int,
    metric: str,
    m: int,
    ef_construction: int,
    text_search_config: str,
    chunk: tuple[int, int] | None = None,
) -> sa.Insert:
    """Insert a collection unless one has the name; RETURNING its id (no row when it existed).
    ``chunk``: (size, overlap) in tokens of the texts' passages; None: texts are not split."""
    values = {
        "chunk_size": chunk[0] if chunk else None,
        "chunk_overlap": chunk[1] if chunk else None,
        "text_search_config": sa.cast(text_search_config, REGCONFIG),
        "name": name,
        "model_name": model,
        "dimension": dimension,
        "metric": metric,
        "hnsw_m": m,
        "hnsw_ef_construction": ef_construction,
    }
    return insert(collections).values(values).on_conflict_do_nothing(index_elements=[c.name]).returning(c.id)


def find_collection(name: str) -> sa.Select[Any]:
    return sa.select(*COLLECTION_COLUMNS, *SEARCH_COLUMNS).where(c.name == name)


def collection_current(
    collection_id: int,
    name: str,
    model: str,
    dimension: int,
    metric: str,
    text_search_config: str,
    chunk_size: int | None,
) -> sa.ColumnElement[bool]:
    """Whether the collection still has the row a statement was built from (a store remembers
    collections: semsim_pg.store.catalog). Added to a search as a column, it is evaluated once,
    in the search's own snapshot: a primary-key lookup, no round trip of its own."""
    same = sa.select(sa.literal(1)).where(
        c.id == collection_id,
        c.name == name,
        c.model_name == model,
        c.dimension == dimension,
        c.metric == metric,
        sa.cast(c.text_search_config, sa.Text) == text_search_config,
        c.chunk_size.is_not_distinct_from(chunk_size),  # split into passages or not: another statement
    )
    # Never correlated with a statement that reads collections itself (hybrid reads the language).
    return same.correlate(None).exists().label("collection_current")


def list_collections() -> sa.Select[Any]:
    """Every collection with its document count and how many hold a current vector of its model."""
    d, e = documents.c, embeddings.c
    n_documents = sa.select(sa.func.count()).where(d.collection_id == c.id).scalar_subquery()
    n_embedded = (
        sa.select(sa.func.count())
        .select_from(documents.join(embeddings, e.document_id == d.id))
        .where(d.collection_id == c.id, e.model_name == c.model_name, e.passage == 0, e.text_hash == d.text_hash)
        .scalar_subquery()
    )
    return sa.select(*COLLECTION_COLUMNS, n_documents, n_embedded, *SEARCH_COLUMNS).order_by(c.name)


def vector_backends() -> sa.Select[Any]:
    """(collection id, backend or NULL, count) of every collection's vectors of its current model:
    which encoder backends made them (migration 0006; NULL is unknown)."""
    e = embeddings.c
    return (
        sa.select(e.collection_id, e.backend, sa.func.count())
        .join_from(embeddings, collections, sa.and_(c.id == e.collection_id, c.model_name == e.model_name))
        .group_by(e.collection_id, e.backend)
        .order_by(e.collection_id, e.backend)
    )


def lock_collection_model(collection_id: int, *, exclusive: bool) -> sa.Select[Any]:
    """The collection's model, row-locked: shared by writers of vectors, exclusive by a model switch."""
    return sa.select(c.model_name).where(c.id == collection_id).with_for_update(read=not exclusive)


def lock_collection_for_write(collection_id: int) -> sa.Select[Any]:
    """The collection's model and passage size and overlap, share-locked by a batch of an ingest:
    a model switch or a new split setting (both lock the row exclusively) waits for it, and the
    batch sees whether its vectors still match what the collection holds."""
    return (
        sa.select(c.model_name, c.chunk_size, c.chunk_overlap).where(c.id == collection_id).with_for_update(read=True)
    )


def set_collection_model(collection_id: int, model: str, dimension: int) -> sa.Update:
    return sa.update(collections).where(c.id == collection_id).values(model_name=model, dimension=dimension)


def set_index_parameters(collection_id: int, m: int, ef_construction: int) -> sa.Update:
    """The HNSW build parameters the collection's next index build uses."""
    return sa.update(collections).where(c.id == collection_id).values(hnsw_m=m, hnsw_ef_construction=ef_construction)


def set_text_search_config(collection_id: int, config: str) -> sa.Update:
    """Change the collection's language; a trigger (migration 0005) re-derives its documents' tsvectors."""
    return sa.update(collections).where(c.id == collection_id).values(text_search_config=sa.cast(config, REGCONFIG))


def set_chunking(collection_id: int, chunk: tuple[int, int] | None) -> sa.Update:
    """How the collection splits its texts from now on (only while it holds no vectors)."""
    return (
        sa.update(collections)
        .where(c.id == collection_id)
        .values(chunk_size=chunk[0] if chunk else None, chunk_overlap=chunk[1] if chunk else None)
    )


def delete_collection(collection_id: int) -> sa.Delete:
    """Delete a collection; its documents and vectors go with it (ON DELETE CASCADE)."""
    return sa.delete(collections).where(c.id == collection_id)
