"""Statements on ``documents`` and their vectors in ``embeddings``.

Writes of vectors are compare-and-set on the text hash: a vector lands only beside a document
that still holds the text it was computed from (ARCHITECTURE.md, decision 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.schema import CreateTable

from semsim_pg.queries.tables import documents, embeddings, qualified

__all__ = [
    "STAGING",
    "copy_staging",
    "count_documents",
    "create_staging",
    "delete_documents",
    "document_vector",
    "external_ids",
    "get_document",
    "lock_documents_share",
    "model_names",
    "remove_model_rows",
    "sample_embeddings",
    "stale_among",
    "stale_count",
    "stale_rows",
    "stored_hashes",
    "stream_embeddings",
    "upsert_staged_documents",
    "vector_count",
    "write_staged_vectors",
    "write_vectors_cas",
]

d, e = documents.c, embeddings.c

#: a batch's rows on their way in: binary COPY here, then one INSERT ... ON CONFLICT per table
STAGING = sa.Table(
    "semsim_staging",
    sa.MetaData(),
    sa.Column("external_id", sa.Text),
    sa.Column("text", sa.Text),
    sa.Column("metadata", sa.Text),
    sa.Column("text_hash", sa.Text),
    sa.Column("embedding", Vector()),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
s = STAGING.c


def create_staging() -> CreateTable:
    return CreateTable(STAGING, if_not_exists=True)


def copy_staging() -> str:
    """COPY has no SQLAlchemy construct: the statement for psycopg's ``cursor.copy``."""
    columns = ", ".join(column.name for column in STAGING.columns)
    return f"COPY {STAGING.name} ({columns}) FROM STDIN (FORMAT BINARY)"


def _array(values: Sequence[Any], item: Any) -> sa.BindParameter[Any]:
    return sa.bindparam(None, list(values), type_=ARRAY(item))


def _raw(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A vector column without SQLAlchemy's conversion: psycopg's (NumPy, once pgvector's
    loaders are registered on the connection) or the text form; :func:`semsim_pg.sql.to_array`
    reads both."""
    return sa.type_coerce(column, sa.types.NullType())


# reading ----------------------------------------------------------------------------------------
def stored_hashes(collection_id: int, model: str, external_ids: Sequence[str]) -> sa.Select[Any]:
    """(external id, hash of the text its ``model`` vector was made from, or NULL) of existing documents."""
    return (
        sa.select(d.external_id, e.text_hash)
        .select_from(documents.outerjoin(embeddings, sa.and_(e.document_id == d.id, e.model_name == model)))
        .where(d.collection_id == collection_id, d.external_id == sa.any_(_array(external_ids, sa.Text)))
    )


def _stale(collection_id: int, model: str, backend: str | None = None) -> tuple[sa.FromClause, sa.ColumnElement[bool]]:
    # A document is stale when it has no vector of the model, or one of other text: one
    # anti-join finds them whoever changed the text (semsim, psql, another application).
    source = documents.outerjoin(embeddings, sa.and_(e.document_id == d.id, e.model_name == model))
    stale = [e.document_id.is_(None), e.text_hash != d.text_hash]
    if backend is not None:  # re-encoding with one backend: another's vector (or an unknown one) is to redo
        stale.append(e.backend.is_distinct_from(backend))
    condition = sa.and_(d.collection_id == collection_id, sa.or_(*stale))
    return source, condition


def stale_rows(collection_id: int, model: str, after: int, limit: int, *, backend: str | None = None) -> sa.Select[Any]:
    """(id, text, text hash) of the next ``limit`` stale documents with an id above ``after``
    (with ``backend``: also those whose vector another backend made)."""
    source, condition = _stale(collection_id, model, backend)
    return (
        sa.select(d.id, d.text, d.text_hash)
        .select_from(source)
        .where(condition, d.id > after)
        .order_by(d.id)
        .limit(limit)
    )


def stale_count(collection_id: int, model: str, *, backend: str | None = None) -> sa.Select[Any]:
    source, condition = _stale(collection_id, model, backend)
    return sa.select(sa.func.count()).select_from(source).where(condition)


def stale_among(collection_id: int, model: str, external_ids: Sequence[str]) -> sa.Select[Any]:
    """(external id, id, text hash) of the named documents that are stale for ``model``."""
    source, condition = _stale(collection_id, model)
    return (
        sa.select(d.external_id, d.id, d.text_hash)
        .select_from(source)
        .where(condition, d.external_id == sa.any_(_array(external_ids, sa.Text)))
    )


def count_documents(collection_id: int) -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(documents).where(d.collection_id == collection_id)


def vector_count(collection_id: int, model: str) -> sa.Select[Any]:
    return (
        sa.select(sa.func.count())
        .select_from(embeddings)
        .where(e.collection_id == collection_id, e.model_name == model)
    )


def get_document(collection_id: int, external_id: str) -> sa.Select[Any]:
    return sa.select(d.external_id, d.text, d.metadata).where(
        d.collection_id == collection_id, d.external_id == external_id
    )


def external_ids(collection_id: int) -> sa.Select[Any]:
    return sa.select(d.external_id).where(d.collection_id == collection_id)


def document_vector(collection_id: int, model: str, external_id: str) -> sa.Select[Any]:
    """(document id, its ``model`` vector or NULL) of one document."""
    return (
        sa.select(d.id, sa.cast(e.embedding, sa.Text))
        .select_from(documents.outerjoin(embeddings, sa.and_(e.document_id == d.id, e.model_name == model)))
        .where(d.collection_id == collection_id, d.external_id == external_id)
    )


def stream_embeddings(collection_id: int, model: str, after: int, limit: int) -> sa.Select[Any]:
    """(document id, external id, vector) of ``model``, in id order after ``after`` (keyset pages)."""
    return (
        sa.select(e.document_id, d.external_id, _raw(e.embedding))
        .select_from(embeddings.join(documents, d.id == e.document_id))
        .where(e.collection_id == collection_id, e.model_name == model, e.document_id > after)
        .order_by(e.document_id)
        .limit(limit)
    )


def model_names(collection_id: int) -> sa.Select[Any]:
    """The models that have vectors in the collection."""
    return sa.select(e.model_name).where(e.collection_id == collection_id).distinct()


# writing ----------------------------------------------------------------------------------------
def upsert_staged_documents(collection_id: int) -> sa.Insert:
    """Insert or update the staged documents; RETURNING true per inserted, false per updated row.

    A document whose text and metadata are unchanged is not updated (and not returned), but is
    still row-locked until the transaction ends, as ON CONFLICT DO UPDATE locks every conflicting row.
    """
    statement = insert(documents).from_select(
        ["collection_id", "external_id", "text", "metadata"],
        sa.select(sa.literal(collection_id), s.external_id, s.text, sa.cast(s.metadata, JSONB)),
    )
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[d.collection_id, d.external_id],
        set_={"text": excluded.text, "metadata": excluded.metadata, "updated_at": sa.func.now()},
        where=sa.or_(d.text.is_distinct_from(excluded.text), d.metadata.is_distinct_from(excluded.metadata)),
    ).returning(
        # xmax is a system column (0 for a row this statement inserted), so no table declares it.
        sa.literal_column("xmax = 0", sa.Boolean)
    )


def _upsert_vectors(source: sa.Select[Any]) -> sa.Insert:
    statement = insert(embeddings).from_select(
        ["document_id", "model_name", "collection_id", "text_hash", "embedding", "backend"], source
    )
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[e.document_id, e.model_name],
        set_={
            "text_hash": excluded.text_hash,
            "embedding": excluded.embedding,
            "backend": excluded.backend,
            "created_at": sa.func.now(),
        },
    ).execution_options(preserve_rowcount=True)  # how many landed: SQLAlchemy keeps it only when asked


def _backend(backend: str | None) -> sa.ColumnElement[Any]:
    """The encoder backend that made a batch of vectors (None: unknown, e.g. vectors a caller gave)."""
    return sa.literal(backend, sa.Text)


def write_staged_vectors(collection_id: int, model: str, backend: str | None) -> sa.Insert:
    """The staged vectors (made by ``backend``), each beside the document of its id if that holds
    the staged text."""
    match = sa.and_(d.collection_id == collection_id, d.external_id == s.external_id, d.text_hash == s.text_hash)
    source = (
        sa.select(d.id, sa.literal(model), d.collection_id, s.text_hash, s.embedding, _backend(backend))
        .select_from(STAGING.join(documents, match))
        .where(s.embedding.is_not(None))
    )
    return _upsert_vectors(source)


def write_vectors_cas(
    model: str, ids: Sequence[int], hashes: Sequence[str], vectors: Sequence[str], backend: str | None
) -> sa.Insert:
    """Write ``vectors`` (pgvector text form, made by ``backend``) of ``model`` for documents ``ids``, each only if the
    document still holds the text of ``hashes`` (compare-and-set): a document changed since it
    was read keeps its stale state and is found by the next pass."""
    given = (
        sa.func.unnest(_array(ids, sa.BigInteger), _array(hashes, sa.Text), _array(vectors, sa.Text))
        .table_valued("id", "text_hash", "embedding")
        .render_derived(name="v")
    )
    source = (
        sa.select(
            d.id,
            sa.literal(model),
            d.collection_id,
            d.text_hash,
            sa.cast(given.c.embedding, Vector()),
            _backend(backend),
        )
        .join_from(given, documents, sa.and_(d.id == given.c.id, d.text_hash == given.c.text_hash))
        # Share-lock the documents written for: their text cannot change before this commits, and
        # one a writer holds is skipped (that writer brings its vector; the next pass finds the rest).
        .with_for_update(read=True, skip_locked=True, of=documents)
    )
    return _upsert_vectors(source)


def delete_documents(collection_id: int, external_ids: Sequence[str]) -> sa.Delete:
    return sa.delete(documents).where(
        d.collection_id == collection_id, d.external_id == sa.any_(_array(external_ids, sa.Text))
    )


def remove_model_rows(collection_id: int, model: str, limit: int) -> sa.Delete:
    """Delete up to ``limit`` of the collection's vectors of ``model`` (short transactions)."""
    batch = (
        sa.select(e.document_id, e.model_name)
        .where(e.collection_id == collection_id, e.model_name == model)
        .limit(limit)
    )
    return sa.delete(embeddings).where(sa.tuple_(e.document_id, e.model_name).in_(batch))


def lock_documents_share() -> sa.TextClause:
    """Hold off writers of documents (not readers) until the transaction ends.

    LOCK TABLE has no SQLAlchemy construct."""
    return sa.text(f"LOCK TABLE {qualified(documents.name)} IN SHARE MODE")


def sample_embeddings(collection_id: int, model: str, limit: int, seed: str = "") -> sa.Select[Any]:
    """(external id, vector, document id) of ``limit`` vectors of ``model`` in a pseudo-random
    order that a ``seed`` repeats (a hash of the id: not the insertion order, the same on every run)."""
    order = sa.func.md5(sa.cast(e.document_id, sa.Text).concat(seed))
    return (
        sa.select(d.external_id, _raw(e.embedding), d.id)
        .select_from(embeddings.join(documents, d.id == e.document_id))
        .where(e.collection_id == collection_id, e.model_name == model)
        .order_by(order)
        .limit(limit)
    )
