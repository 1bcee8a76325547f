"""semsim's tables, as typed SQLAlchemy 2.0 models (the migrations create them).

Decision 2 of ARCHITECTURE.md: vectors live in a companion table, ``embeddings``, one row per
(document, model, passage) (decision 10: a long text may be split into passages), so that an update of a document's metadata never touches the HNSW index.
Each (collection, model) has its own partial HNSW index on that table, on the vector cast to the
model's dimension, so collections with different models and dimensions share one table.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REGCONFIG, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from semsim_pg.sql import METRIC_NAMES

__all__ = ["SCHEMA", "Base", "CollectionRow", "DocumentRow", "EmbeddingRow", "QueryLogRow"]

SCHEMA = "semsim"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


class CollectionRow(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(sa.Integer, sa.Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    model_name: Mapped[str] = mapped_column(sa.Text)
    dimension: Mapped[int] = mapped_column(sa.Integer)
    metric: Mapped[str] = mapped_column(sa.Text)
    hnsw_m: Mapped[int] = mapped_column(sa.Integer)
    hnsw_ef_construction: Mapped[int] = mapped_column(sa.Integer)
    #: the PostgreSQL text search configuration of lexical search (migration 0005)
    text_search_config: Mapped[str] = mapped_column(REGCONFIG, server_default=sa.text("'english'"))
    #: passages of at most this many tokens, consecutive ones sharing up to ``chunk_overlap``
    #: (NULL: texts are not split; migration 0007)
    chunk_size: Mapped[int | None] = mapped_column(sa.Integer)
    chunk_overlap: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.CheckConstraint(f"metric IN ({', '.join(repr(m) for m in METRIC_NAMES)})", name="metric"),
        sa.CheckConstraint("dimension BETWEEN 1 AND 2000", name="dimension"),
        sa.CheckConstraint(
            "(chunk_size IS NULL AND chunk_overlap IS NULL)"
            " OR (chunk_size >= 16 AND chunk_overlap >= 0 AND chunk_overlap < chunk_size)",
            name="chunk",
        ),
    )


class DocumentRow(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey(CollectionRow.id, ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(sa.Text)
    text: Mapped[str] = mapped_column(sa.Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=sa.text("'{}'::jsonb"))
    # Computed by PostgreSQL from the text (migration 0002), so any writer keeps it true.
    text_hash: Mapped[str] = mapped_column(sa.Text, sa.Computed(f"{SCHEMA}.text_hash(text)", persisted=True))
    # Written by a trigger from the text and the collection's configuration (migration 0005).
    tsv: Mapped[Any] = mapped_column(TSVECTOR, server_default=sa.FetchedValue())
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.UniqueConstraint("collection_id", "external_id"),
        sa.Index(
            "ix_documents_metadata", "metadata", postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"}
        ),
        # tsv's GIN indexes are one per collection, partial on collection_id, made with the
        # collection (semsim_pg.queries.create_text_index; migration 0008), like the HNSW ones.
    )


class EmbeddingRow(Base):
    __tablename__ = "embeddings"

    document_id: Mapped[int] = mapped_column(sa.ForeignKey(DocumentRow.id, ondelete="CASCADE"), primary_key=True)
    model_name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    #: the passage of the document's text (0: the first, or the whole text when it is not split)
    passage: Mapped[int] = mapped_column(sa.Integer, primary_key=True, server_default=sa.text("0"))
    #: its character offsets in the text (``passage_end`` NULL: to the end of the text)
    passage_start: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    passage_end: Mapped[int | None] = mapped_column(sa.Integer)
    # Copied from the document so that each (collection, model) partial index can name it.
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey(CollectionRow.id, ondelete="CASCADE"))
    text_hash: Mapped[str] = mapped_column(sa.Text)
    embedding: Mapped[Any] = mapped_column(Vector())
    #: the encoder backend that made the vector (``onnx-int8``, ``torch``, ...; migration 0006);
    #: NULL: unknown (a vector from before 0006, or one the caller gave)
    backend: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class QueryLogRow(Base):
    """One logged search or FAQ question (semsim_pg.insights; written only when the log is on).

    ``collection`` is a name, not a key: the log outlives a dropped collection, and the Django
    FAQ logs under its model's label. ``answered`` is NULL for plain searches.
    """

    __tablename__ = "query_log"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    collection: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.Text)
    mode: Mapped[str | None] = mapped_column(sa.Text)
    k: Mapped[int | None] = mapped_column(sa.Integer)
    query_text: Mapped[str | None] = mapped_column(sa.Text)
    query_hash: Mapped[str] = mapped_column(sa.Text)
    model_name: Mapped[str | None] = mapped_column(sa.Text)
    embedding: Mapped[Any] = mapped_column(Vector(), nullable=True)
    result_ids: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), server_default=sa.text("'{}'"))
    result_scores: Mapped[list[float]] = mapped_column(ARRAY(sa.Float), server_default=sa.text("'{}'"))
    top_score: Mapped[float | None] = mapped_column(sa.Float)
    answered: Mapped[bool | None] = mapped_column(sa.Boolean)
    latency_ms: Mapped[float | None] = mapped_column(sa.Float)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    resolved_as: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.CheckConstraint("kind IN ('search', 'faq')", name="kind"),
        sa.Index("ix_query_log_collection_created_at", "collection", "created_at"),
        sa.Index("ix_query_log_created_at", "created_at"),
    )
