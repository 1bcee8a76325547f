"""Statements on ``documents`` and their vectors in ``embeddings``.

Writes of vectors are compare-and-set on the text hash: a vector lands only beside a document
that still holds the text it was computed from (ARCHITECTURE.md, decision 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, array, insert
from sqlalchemy.schema import CreateTable

from semsim_pg.queries.tables import documents, embeddings, qualified

__all__ = [
    "STAGING",
    "copy_staging",
    "count_documents",
    "create_staging",
    "delete_documents",
    "document_vector",
    "documents_lacking",
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
    # One row per passage: passage 0 carries the document (text, metadata), the others only
    # their vector (text and metadata NULL).
    sa.Column("passage", sa.Integer),
    sa.Column("passage_start", sa.Integer),
    sa.Column("passage_end", sa.Integer),
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
def _first_passage(model: str) -> sa.ColumnElement[bool]:
    """The join of a document to its ``model`` vector: passage 0 stands for the document (all its
    passages are written together, from one text)."""
    return sa.and_(e.document_id == d.id, e.model_name == model, e.passage == 0)


def stored_hashes(collection_id: int, model: str, external_ids: Sequence[str]) -> sa.Select[Any]:
    """(external id, hash of the text its ``model`` vector was made from, or NULL) of existing documents."""
    return (
        sa.select(d.external_id, e.text_hash)
        .select_from(documents.outerjoin(embeddings, _first_passage(model)))
        .where(d.collection_id == collection_id, d.external_id == sa.any_(_array(external_ids, sa.Text)))
    )


def _stale(collection_id: int, model: str, backend: str | None = None) -> tuple[sa.FromClause, sa.ColumnElement[bool]]:
    # A document is stale when it has no vector of the model, or one of other text: one
    # anti-join finds them whoever changed the text (semsim, psql, another application).
    source = documents.outerjoin(embeddings, _first_passage(model))
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


def has_keys(keys: Sequence[str]) -> sa.ColumnElement[bool]:
    """Whether a document's metadata has every one of ``keys`` (``metadata ?& keys``)."""
    has_all: sa.ColumnElement[bool] = d.metadata.has_all(sa.cast(array(list(keys)), ARRAY(sa.Text)))
    return has_all


def documents_lacking(collection_id: int, keys: Sequence[str]) -> sa.Select[Any]:
    """(external id, text hash) of the collection's documents whose metadata lacks one of ``keys``:
    those another command wrote, where a command marks what it owns by a key (an FAQ entry's
    phrasings carry ``faq_id``, an evaluation's corpus its marker)."""
    return sa.select(d.external_id, d.text_hash).where(d.collection_id == collection_id, sa.not_(has_keys(keys)))


def external_ids(collection_id: int) -> sa.Select[Any]:
    return sa.select(d.external_id).where(d.collection_id == collection_id)


def document_vector(collection_id: int, model: str, external_id: str) -> sa.Select[Any]:
    """(document id, its ``model`` vector or NULL) of one document (of a split one, its first passage's)."""
    return (
        sa.select(d.id, sa.cast(e.embedding, sa.Text))
        .select_from(documents.outerjoin(embeddings, _first_passage(model)))
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
        sa.select(sa.literal(collection_id), s.external_id, s.text, sa.cast(s.metadata, JSONB)).where(s.passage == 0),
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


def _upsert_vectors(model: str, source: sa.Subquery) -> sa.Select[Any]:
    """Write the passages of ``source`` (document id, collection id, text hash, vector, passage,
    start, end) and remove the document's passages beyond the last one written, in one statement:
    a text split anew replaces all of its passages at once. Returns how many documents got vectors."""
    statement = insert(embeddings).from_select(
        [
            "document_id",
            "model_name",
            "collection_id",
            "text_hash",
            "embedding",
            "backend",
            "passage",
            "passage_start",
            "passage_end",
        ],
        sa.select(
            source.c.id,
            sa.literal(model),
            source.c.collection_id,
            source.c.text_hash,
            source.c.embedding,
            source.c.backend,
            source.c.passage,
            source.c.passage_start,
            source.c.passage_end,
        ),
    )
    excluded = statement.excluded
    written = (
        statement.on_conflict_do_update(
            index_elements=[e.document_id, e.model_name, e.passage],
            set_={
                "text_hash": excluded.text_hash,
                "embedding": excluded.embedding,
                "backend": excluded.backend,
                "passage_start": excluded.passage_start,
                "passage_end": excluded.passage_end,
                "created_at": sa.func.now(),
            },
        )
        .returning(e.document_id, e.passage)
        .cte("written")
    )
    last = (
        sa.select(written.c.document_id, sa.func.max(written.c.passage).label("last"))
        .group_by(written.c.document_id)
        .cte("last_passages")
    )
    # Rows of one statement's snapshot: the delete never sees the passages just written, and
    # touches only those beyond them (an unsplit text has none: an index probe per document).
    removed = (
        sa.delete(embeddings)
        .where(e.document_id == last.c.document_id, e.model_name == model, e.passage > last.c.last)
        .cte("removed")
    )
    return sa.select(sa.func.count()).select_from(last).add_cte(removed)


def _backend(backend: str | None) -> sa.ColumnElement[Any]:
    """The encoder backend that made a batch of vectors (None: unknown, e.g. vectors a caller gave)."""
    return sa.literal(backend, sa.Text).label("backend")


def write_staged_vectors(collection_id: int, model: str, backend: str | None) -> sa.Select[Any]:
    """The staged vectors (made by ``backend``), each beside the document of its id if that holds
    the staged text."""
    match = sa.and_(d.collection_id == collection_id, d.external_id == s.external_id, d.text_hash == s.text_hash)
    source = (
        sa.select(
            d.id,
            d.collection_id,
            s.text_hash,
            s.embedding,
            _backend(backend),
            s.passage,
            s.passage_start,
            s.passage_end,
        )
        .select_from(STAGING.join(documents, match))
        .where(s.embedding.is_not(None))
        .subquery("staged")
    )
    return _upsert_vectors(model, source)


def write_vectors_cas(
    model: str,
    ids: Sequence[int],
    hashes: Sequence[str],
    vectors: Sequence[str],
    backend: str | None,
    passages: Sequence[tuple[int, int, int | None]] | None = None,
) -> sa.Select[Any]:
    """Write ``vectors`` (pgvector text form, made by ``backend``) of ``model`` for documents ``ids``, each only if the
    document still holds the text of ``hashes`` (compare-and-set): a document changed since it
    was read keeps its stale state and is found by the next pass. ``passages``: (passage, start,
    end) of each vector (default: passage 0, the whole text); a document's passages must all be
    given together. Returns how many documents got vectors."""
    if passages is None:
        passages = [(0, 0, None)] * len(ids)
    given = (
        sa.func.unnest(
            _array(ids, sa.BigInteger),
            _array(hashes, sa.Text),
            _array(vectors, sa.Text),
            _array([p[0] for p in passages], sa.Integer),
            _array([p[1] for p in passages], sa.Integer),
            _array([p[2] for p in passages], sa.Integer),
        )
        .table_valued("id", "text_hash", "embedding", "passage", "passage_start", "passage_end")
        .render_derived(name="v")
    )
    source = (
        sa.select(
            d.id,
            d.collection_id,
            d.text_hash,
            sa.cast(given.c.embedding, Vector()).label("embedding"),
            _backend(backend),
            given.c.passage,
            given.c.passage_start,
            given.c.passage_end,
        )
        .join_from(given, documents, sa.and_(d.id == given.c.id, d.text_hash == given.c.text_hash))
        # Share-lock the documents written for: their text cannot change before this commits, and
        # one a writer holds is skipped (that writer brings its vector; the next pass finds the rest).
        .with_for_update(read=True, skip_locked=True, of=documents)
        .subquery("given_vectors")
    )
    return _upsert_vectors(model, source)


def delete_documents(collection_id: int, external_ids: Sequence[str]) -> sa.Delete:
    return sa.delete(documents).where(
        d.collection_id == collection_id, d.external_id == sa.any_(_array(external_ids, sa.Text))
    )


def remove_model_rows(collection_id: int, model: str, limit: int) -> sa.Delete:
    """Delete up to ``limit`` of the collection's vectors of ``model`` (short transactions)."""
    batch = (
        sa.select(e.document_id, e.model_name, e.passage)
        .where(e.collection_id == collection_id, e.model_name == model)
        .limit(limit)
    )
    return sa.delete(embeddings).where(sa.tuple_(e.document_id, e.model_name, e.passage).in_(batch))


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
