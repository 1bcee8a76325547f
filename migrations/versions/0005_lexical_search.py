"""Lexical search: a tsvector per document kept in step with its text, a GIN index, a language
per collection, and the SQL functions of lexical and hybrid search.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

``collections.text_search_config`` names the PostgreSQL text search configuration
(``english``, ``simple``, ``italian``, ...) of a collection. A generated column cannot read
another table, so ``documents.tsv`` is written by a trigger instead: before every insert, and
before every update that touches the text or moves the row to another collection, whatever
wrote it (the store, Django, ``UPDATE semsim.documents SET text = ...`` in psql). Changing a
collection's configuration recomputes its documents' tsvectors in the same transaction.

Rows from before this revision get their tsvector here, so lexical search works on them at once.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TRIGGERS = r"""
CREATE FUNCTION semsim.documents_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.tsv := to_tsvector(
    (SELECT c.text_search_config FROM semsim.collections c WHERE c.id = NEW.collection_id), NEW.text);
  RETURN NEW;
END
$$;

CREATE TRIGGER documents_tsv BEFORE INSERT OR UPDATE OF text, collection_id ON semsim.documents
FOR EACH ROW EXECUTE FUNCTION semsim.documents_tsv();

CREATE FUNCTION semsim.collections_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE semsim.documents SET tsv = to_tsvector(NEW.text_search_config, text) WHERE collection_id = NEW.id;
  RETURN NULL;
END
$$;

CREATE TRIGGER collections_tsv AFTER UPDATE OF text_search_config ON semsim.collections
FOR EACH ROW WHEN (OLD.text_search_config IS DISTINCT FROM NEW.text_search_config)
EXECUTE FUNCTION semsim.collections_tsv();
"""

# Any-of-the-words query: the lexemes of the text under the configuration (stop words gone,
# words stemmed), OR-ed. PostgreSQL's own text form of a stripped tsvector quotes each lexeme
# ('a' 'b'), and a lexeme never holds a space, so joining the quoted lexemes with ' | ' is a
# valid tsquery whatever the user typed: no user text is ever parsed as query syntax.
QUERY_FUNCTION = r"""
CREATE FUNCTION semsim.any_words_query(config regconfig, query_text text) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT replace(strip(to_tsvector(config, query_text))::text, ''' ''', ''' | ''')::tsquery
$$;
"""

# The statement of semsim_pg.queries.hybrid (BM25 with k1 = 1.2, b = 0.75, tf from ts_rank as in its
# term_frequency, and the fusion), in PL/pgSQL for
# SQL users; dynamic SQL so that the collection id, model and dimension are literals and the
# partial HNSW index applies. tests/test_hybrid.py checks that both return the same hits.
HYBRID_FUNCTION = r"""
CREATE FUNCTION semsim.hybrid_search(
  collection_name text, query_text text, query_vector vector, k integer DEFAULT 10, filter jsonb DEFAULT NULL,
  candidates integer DEFAULT 100, rrf_k integer DEFAULT 60,
  dense_weight double precision DEFAULT 1, lexical_weight double precision DEFAULT 1)
RETURNS TABLE(external_id text, text text, metadata jsonb, similarity double precision, distance double precision,
              score double precision, dense_rank bigint, lexical_rank bigint, lexical_score double precision)
LANGUAGE plpgsql AS $$
DECLARE
  c semsim.collections;
BEGIN
  SELECT * INTO c FROM semsim.collections WHERE name = collection_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'semsim: no collection named "%"', collection_name
      USING HINT = 'SELECT name FROM semsim.collections lists the collections.';
  END IF;
  IF query_vector IS NULL OR query_text IS NULL THEN
    RAISE EXCEPTION 'semsim: hybrid_search needs the query as text and as a vector';
  END IF;
  IF vector_dims(query_vector) <> c.dimension THEN
    RAISE EXCEPTION 'semsim: the query vector has % dimensions but collection "%" holds % (model %)',
      vector_dims(query_vector), c.name, c.dimension, c.model_name
      USING HINT = 'Encode the query with the collection''s model.';
  END IF;
  IF k IS NULL OR k < 1 OR candidates IS NULL OR candidates < 1 THEN
    RAISE EXCEPTION 'semsim: k and candidates must be at least 1, got % and %', k, candidates;
  END IF;
  PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
  PERFORM set_config('hnsw.ef_search',
    greatest(current_setting('hnsw.ef_search')::integer, least(candidates, 1000))::text, true);
  RETURN QUERY EXECUTE format($q$
    WITH dense_hits AS MATERIALIZED (
      SELECT e.document_id AS id, ((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision AS distance
      FROM semsim.embeddings e JOIN semsim.documents d ON d.id = e.document_id
      WHERE e.collection_id = %3$s AND e.model_name = %4$L AND ($4::jsonb IS NULL OR d.metadata @> $4::jsonb)
      ORDER BY distance LIMIT $5),
    dense AS (SELECT h.id, h.distance, row_number() OVER (ORDER BY h.distance, h.id) AS rank FROM dense_hits h),
    raw_terms AS (
      SELECT w.lexeme, array_to_tsvector(ARRAY[w.lexeme])::text::tsquery AS query
      FROM unnest(strip(to_tsvector(%5$L::regconfig, $2))) AS w),
    counted_terms AS MATERIALIZED (
      SELECT r.lexeme, r.query, (SELECT count(*) FROM (SELECT 1 FROM semsim.documents d
        WHERE d.collection_id = %3$s AND d.tsv @@ r.query LIMIT $9) s) AS df
      FROM raw_terms r),
    stats AS (
      SELECT (SELECT count(*) FROM semsim.documents WHERE collection_id = %3$s)::double precision AS n,
             coalesce((SELECT avg(length(s.tsv)) FROM (SELECT tsv FROM semsim.documents
                       WHERE collection_id = %3$s LIMIT 256) s), 1.0) AS avgdl),
    terms AS MATERIALIZED (
      SELECT t.lexeme, t.query, t.df, ln(1 + (st.n - t.df + 0.5) / (t.df + 0.5)) AS idf,
             coalesce(sum(t.df) OVER (ORDER BY t.df, t.lexeme ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
               < $9 AS brings
      FROM counted_terms t JOIN stats st ON true WHERE t.df > 0),
    candidates AS (
      SELECT d.id, d.tsv FROM semsim.documents d
      WHERE d.collection_id = %3$s
        AND d.tsv @@ (SELECT string_agg(t.query::text, ' | ')::tsquery FROM terms t WHERE t.brings)
        AND ($4::jsonb IS NULL OR d.metadata @> $4::jsonb)
      LIMIT 2 * $9),
    scored AS (
      SELECT cd.id, (SELECT coalesce(sum(t.idf * tf.tf * 2.2 / (tf.tf + 1.2 * (0.25 + 0.75 * length(cd.tsv) / st.avgdl))), 0.0)
                FROM terms t CROSS JOIN stats st
                CROSS JOIN LATERAL (SELECT least(greatest(round(1 / greatest(1.6449340668482264 - ts_rank(cd.tsv, t.query, 0) * 16.449340668482264, 1e-4) - 0.5), 1), 256) AS tf) tf
                WHERE cd.tsv @@ t.query) AS score
      FROM candidates cd),
    lexical AS (
      SELECT s.id, s.score, row_number() OVER (ORDER BY s.score DESC, s.id) AS rank
      FROM scored s ORDER BY s.score DESC, s.id LIMIT $5),
    fused AS (
      SELECT coalesce(dn.id, lx.id) AS id,
             coalesce($7 / ($6 + dn.rank), 0.0) + coalesce($8 / ($6 + lx.rank), 0.0) AS score,
             dn.rank AS dense_rank, dn.distance, lx.rank AS lexical_rank, lx.score AS lexical_score
      FROM dense dn FULL JOIN lexical lx ON dn.id = lx.id),
    best AS (
      SELECT d.external_id, d.text, d.metadata,
             coalesce(f.distance, ((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision) AS distance,
             f.score, f.dense_rank, f.lexical_rank, coalesce(f.lexical_score, (SELECT coalesce(sum(t.idf * tf.tf * 2.2 / (tf.tf + 1.2 * (0.25 + 0.75 * length(d.tsv) / st.avgdl))), 0.0)
                FROM terms t CROSS JOIN stats st
                CROSS JOIN LATERAL (SELECT least(greatest(round(1 / greatest(1.6449340668482264 - ts_rank(d.tsv, t.query, 0) * 16.449340668482264, 1e-4) - 0.5), 1), 256) AS tf) tf
                WHERE d.tsv @@ t.query)) AS lexical_score
      FROM fused f JOIN semsim.documents d ON d.id = f.id
      LEFT JOIN semsim.embeddings e ON e.document_id = f.id AND e.model_name = %4$L
      ORDER BY f.score DESC, f.id LIMIT $3)
    SELECT b.external_id, b.text, b.metadata, semsim.similarity(%6$L, b.distance), b.distance,
           b.score, b.dense_rank, b.lexical_rank, b.lexical_score
    FROM best b ORDER BY b.score DESC$q$,
    c.dimension, semsim.distance_operator(c.metric), c.id, c.model_name, c.text_search_config, c.metric)
  USING query_vector, query_text, k, filter, candidates, rrf_k, dense_weight, lexical_weight, 2000;
END
$$;
"""


def upgrade() -> None:
    op.execute("ALTER TABLE semsim.collections ADD COLUMN text_search_config regconfig NOT NULL DEFAULT 'english'")
    op.execute("ALTER TABLE semsim.documents ADD COLUMN tsv tsvector")
    # Rows from before: one pass, then the trigger keeps every later write in step.
    op.execute(
        "UPDATE semsim.documents d SET tsv = to_tsvector(c.text_search_config, d.text)"
        " FROM semsim.collections c WHERE c.id = d.collection_id"
    )
    op.execute("ALTER TABLE semsim.documents ALTER COLUMN tsv SET NOT NULL")
    op.execute(TRIGGERS)
    op.execute("CREATE INDEX ix_documents_tsv ON semsim.documents USING gin (tsv)")
    op.execute(QUERY_FUNCTION)
    op.execute(HYBRID_FUNCTION)


#: what a downgrade past this revision loses (`semsim db downgrade` says it, and wants --yes)
DOWNGRADE_LOSES = "each collection's text search language (the words' index is rebuilt on upgrade, in English)"


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION semsim.hybrid_search(text, text, vector, integer, jsonb, integer, integer,"
        " double precision, double precision)"
    )
    op.execute("DROP FUNCTION semsim.any_words_query(regconfig, text)")
    op.execute("DROP TRIGGER collections_tsv ON semsim.collections")
    op.execute("DROP FUNCTION semsim.collections_tsv()")
    op.execute("DROP TRIGGER documents_tsv ON semsim.documents")
    op.execute("DROP FUNCTION semsim.documents_tsv()")
    op.execute("DROP INDEX semsim.ix_documents_tsv")
    op.execute("ALTER TABLE semsim.documents DROP COLUMN tsv")
    op.execute("ALTER TABLE semsim.collections DROP COLUMN text_search_config")
