"""semsim schema: collections, documents, embeddings (companion table), SQL functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The SQL functions build the same statement as semsim_pg.queries.search (dynamic SQL, so that
# the collection id, model and dimension are literals and the partial HNSW index applies);
# tests/test_queries.py checks that both return the same hits, and that the metric literals
# here agree with semsim_pg.sql.METRICS.
FUNCTIONS = r"""
CREATE FUNCTION semsim.distance_operator(metric text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE metric WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->'
                     WHEN 'inner_product' THEN '<#>' WHEN 'l1' THEN '<+>' END
$$;

CREATE FUNCTION semsim.similarity(metric text, distance double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE metric WHEN 'cosine' THEN 1 - distance WHEN 'inner_product' THEN -distance
                     ELSE 1 / (1 + distance) END
$$;

CREATE FUNCTION semsim._search(c semsim.collections, query vector, k integer, filter jsonb, exclude_id bigint)
RETURNS TABLE(external_id text, text text, metadata jsonb, similarity double precision, distance double precision)
LANGUAGE plpgsql AS $$
BEGIN
  IF query IS NULL THEN
    RAISE EXCEPTION 'semsim: the query vector is NULL' USING HINT = 'Pass a vector, e.g. ''[0.1, 0.2, ...]''::vector.';
  END IF;
  IF vector_dims(query) <> c.dimension THEN
    RAISE EXCEPTION 'semsim: the query vector has % dimensions but collection "%" holds % (model %)',
      vector_dims(query), c.name, c.dimension, c.model_name
      USING HINT = 'Encode the query with the collection''s model.';
  END IF;
  IF k IS NULL OR k < 1 THEN
    RAISE EXCEPTION 'semsim: k must be at least 1, got %', k;
  END IF;
  PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
  RETURN QUERY EXECUTE format(
    'WITH hits AS MATERIALIZED ('
    '  SELECT d.external_id, d.text, d.metadata,'
    '         ((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision AS distance'
    '  FROM semsim.embeddings e JOIN semsim.documents d ON d.id = e.document_id'
    '  WHERE e.collection_id = %3$s AND e.model_name = %4$L'
    '    AND ($3::jsonb IS NULL OR d.metadata @> $3::jsonb) AND ($4::bigint IS NULL OR d.id <> $4::bigint)'
    '  ORDER BY distance LIMIT $2)'
    ' SELECT external_id, text, metadata, semsim.similarity(%5$L, distance), distance FROM hits ORDER BY distance',
    c.dimension, semsim.distance_operator(c.metric), c.id, c.model_name, c.metric)
  USING query, k, filter, exclude_id;
END
$$;

CREATE FUNCTION semsim.search(collection_name text, query vector, k integer DEFAULT 10, filter jsonb DEFAULT NULL)
RETURNS TABLE(external_id text, text text, metadata jsonb, similarity double precision, distance double precision)
LANGUAGE plpgsql AS $$
DECLARE
  c semsim.collections;
BEGIN
  SELECT * INTO c FROM semsim.collections WHERE name = collection_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'semsim: no collection named "%"', collection_name
      USING HINT = 'SELECT name FROM semsim.collections lists the collections.';
  END IF;
  RETURN QUERY SELECT * FROM semsim._search(c, query, k, filter, NULL);
END
$$;

CREATE FUNCTION semsim.similar(collection_name text, source_id text, k integer DEFAULT 10, filter jsonb DEFAULT NULL)
RETURNS TABLE(external_id text, text text, metadata jsonb, similarity double precision, distance double precision)
LANGUAGE plpgsql AS $$
DECLARE
  c semsim.collections;
  doc_id bigint;
  vec vector;
BEGIN
  SELECT * INTO c FROM semsim.collections WHERE name = collection_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'semsim: no collection named "%"', collection_name
      USING HINT = 'SELECT name FROM semsim.collections lists the collections.';
  END IF;
  SELECT d.id, e.embedding INTO doc_id, vec
    FROM semsim.documents d
    LEFT JOIN semsim.embeddings e ON e.document_id = d.id AND e.model_name = c.model_name
   WHERE d.collection_id = c.id AND d.external_id = source_id;
  IF doc_id IS NULL THEN
    RAISE EXCEPTION 'semsim: collection "%" has no document with id "%"', collection_name, source_id;
  END IF;
  IF vec IS NULL THEN
    RAISE EXCEPTION 'semsim: document "%" has no vector for model % yet', source_id, c.model_name
      USING HINT = 'Ingest it again with semsim ingest, or wait for the encoder.';
  END IF;
  RETURN QUERY SELECT * FROM semsim._search(c, vec, k, filter, doc_id);
END
$$;
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("CREATE SCHEMA IF NOT EXISTS semsim")
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("hnsw_m", sa.Integer, nullable=False),
        sa.Column("hnsw_ef_construction", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_collections"),
        sa.UniqueConstraint("name", name="uq_collections_name"),
        sa.CheckConstraint("metric IN ('cosine', 'l2', 'inner_product', 'l1')", name="ck_collections_metric"),
        sa.CheckConstraint("dimension BETWEEN 1 AND 2000", name="ck_collections_dimension"),
        schema="semsim",
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("collection_id", sa.Integer, nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("metadata", JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("text_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["semsim.collections.id"],
            ondelete="CASCADE",
            name="fk_documents_collection_id_collections",
        ),
        sa.UniqueConstraint("collection_id", "external_id", name="uq_documents_collection_id_external_id"),
        schema="semsim",
    )
    op.create_index(
        "ix_documents_metadata",
        "documents",
        ["metadata"],
        schema="semsim",
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    op.create_table(
        "embeddings",
        sa.Column("document_id", sa.BigInteger, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("collection_id", sa.Integer, nullable=False),
        sa.Column("text_hash", sa.Text, nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("document_id", "model_name", name="pk_embeddings"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["semsim.documents.id"],
            ondelete="CASCADE",
            name="fk_embeddings_document_id_documents",
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["semsim.collections.id"],
            ondelete="CASCADE",
            name="fk_embeddings_collection_id_collections",
        ),
        schema="semsim",
    )
    op.create_index(
        "ix_embeddings_collection_id_model_name", "embeddings", ["collection_id", "model_name"], schema="semsim"
    )
    op.execute(FUNCTIONS)


#: what a downgrade past this revision loses (`semsim db downgrade` says it, and wants --yes)
DOWNGRADE_LOSES = "every collection with its documents and vectors (semsim's schema is dropped)"


def downgrade() -> None:
    # Drops semsim's schema with every collection in it; the vector extension stays, other
    # applications may use it.
    op.execute("DROP SCHEMA semsim CASCADE")
