"""Passages: a long text is several rows of ``embeddings``, one per passage per model.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

``collections.chunk_size`` / ``chunk_overlap`` (tokens; NULL: texts are not split) say how a
collection splits its texts, so every later ingest, reconcile and reembed splits them alike.
``embeddings`` gains the passage number (in the primary key) and the passage's character
offsets in the document's text (``passage_end`` NULL: to the end of the text).

Rows from before this revision become passage 0 of their document, covering the whole text:
the columns are added with constant defaults, which PostgreSQL records in the catalogue without
rewriting the table, so nothing is re-encoded and no HNSW index is touched (only the primary
key's btree is rebuilt).

The SQL functions return each document once, with its best passage (three more columns); for
an unsplit collection they run the statement they ran before.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

RESULT = """external_id text, text text, metadata jsonb, similarity double precision, distance double precision,
  passage integer, passage_start integer, passage_end integer"""

# semsim_pg.queries.search.search_statement in PL/pgSQL. A split collection reads the nearest
# n passages (4k first, then 4 times more while fewer than k documents came back and the index
# had more), keeps each document's best and returns the k best documents.
#: the distance to the query, in format()'s arguments (%1$s dimension, %2$s operator)
DISTANCE = "((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision AS distance"
#: the nearest $2 rows of the collection's HNSW index, filtered, closing a CTE (%3$s id, %4$L model)
#: (adjacent SQL string literals join only across a line break)
NEAREST = (
    "'  FROM semsim.embeddings e JOIN semsim.documents d ON d.id = e.document_id'\n"
    "'  WHERE e.collection_id = %3$s AND e.model_name = %4$L'\n"
    "'    AND ($3::jsonb IS NULL OR d.metadata @> $3::jsonb) AND ($4::bigint IS NULL OR d.id <> $4::bigint)'\n"
    "'  ORDER BY distance LIMIT $2)'"
)
SEARCH_FUNCTIONS = rf"""
CREATE FUNCTION semsim._search(c semsim.collections, query vector, k integer, filter jsonb, exclude_id bigint)
RETURNS TABLE({RESULT})
LANGUAGE plpgsql AS $$
DECLARE
  n integer := 4 * k;
  read integer;
  found integer;
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
  IF c.chunk_size IS NULL THEN
    RETURN QUERY EXECUTE format(
      'WITH hits AS MATERIALIZED ('
      '  SELECT d.external_id, d.text, d.metadata, {DISTANCE}, e.passage, e.passage_start, e.passage_end'
      {NEAREST}
      ' SELECT external_id, text, metadata, semsim.similarity(%5$L, distance), distance,'
      '        passage, passage_start, coalesce(passage_end, char_length(text)) FROM hits ORDER BY distance',
      c.dimension, semsim.distance_operator(c.metric), c.id, c.model_name, c.metric)
    USING query, k, filter, exclude_id;
    RETURN;
  END IF;
  LOOP
    PERFORM set_config('hnsw.ef_search', greatest(current_setting('hnsw.ef_search')::integer, least(n, 1000))::text, true);
    EXECUTE format(
      'WITH passage_hits AS MATERIALIZED (SELECT e.document_id, {DISTANCE}'
      {NEAREST}
      ' SELECT count(*), count(DISTINCT document_id) FROM passage_hits',
      c.dimension, semsim.distance_operator(c.metric), c.id, c.model_name)
    INTO read, found USING query, n, filter, exclude_id;
    EXIT WHEN found >= k OR read < n OR n >= 100000;
    n := n * 4;
  END LOOP;
  RETURN QUERY EXECUTE format(
    'WITH passage_hits AS MATERIALIZED ('
    '  SELECT e.document_id, e.passage, e.passage_start, e.passage_end, {DISTANCE}'
    {NEAREST}
    ', best AS (SELECT DISTINCT ON (document_id) * FROM passage_hits ORDER BY document_id, distance, passage),'
    ' hits AS (SELECT d.external_id, d.text, d.metadata, b.distance, b.passage, b.passage_start, b.passage_end'
    '          FROM best b JOIN semsim.documents d ON d.id = b.document_id ORDER BY b.distance LIMIT $5)'
    ' SELECT external_id, text, metadata, semsim.similarity(%5$L, distance), distance,'
    '        passage, passage_start, coalesce(passage_end, char_length(text)) FROM hits ORDER BY distance',
    c.dimension, semsim.distance_operator(c.metric), c.id, c.model_name, c.metric)
  USING query, n, filter, exclude_id, k;
END
$$;

CREATE FUNCTION semsim.search(collection_name text, query vector, k integer DEFAULT 10, filter jsonb DEFAULT NULL)
RETURNS TABLE({RESULT})
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
RETURNS TABLE({RESULT})
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
  -- A split document is compared by its first passage.
  SELECT d.id, e.embedding INTO doc_id, vec
    FROM semsim.documents d
    LEFT JOIN semsim.embeddings e ON e.document_id = d.id AND e.model_name = c.model_name AND e.passage = 0
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

# semsim_pg.queries.hybrid.hybrid_statement in PL/pgSQL (migration 0005's, with passages): the
# dense side reads 4 * candidates passages and ranks each document by its best one; every hit
# carries its best passage for the query.
BM25 = (
    "(SELECT coalesce(sum(t.idf * tf.tf * 2.2 / (tf.tf + 1.2 * (0.25 + 0.75 * length({tsv}) / st.avgdl))), 0.0)"
    " FROM terms t CROSS JOIN stats st"
    " CROSS JOIN LATERAL (SELECT least(greatest(round(1 / greatest(1.6449340668482264 - ts_rank({tsv}, t.query, 0)"
    " * 16.449340668482264, 1e-4) - 0.5), 1), 256) AS tf) tf"
    " WHERE {tsv} @@ t.query)"
)
HYBRID_FUNCTION = rf"""
CREATE FUNCTION semsim.hybrid_search(
  collection_name text, query_text text, query_vector vector, k integer DEFAULT 10, filter jsonb DEFAULT NULL,
  candidates integer DEFAULT 100, rrf_k integer DEFAULT 60,
  dense_weight double precision DEFAULT 1, lexical_weight double precision DEFAULT 1)
RETURNS TABLE(external_id text, text text, metadata jsonb, similarity double precision, distance double precision,
              score double precision, dense_rank bigint, lexical_rank bigint, lexical_score double precision,
              passage integer, passage_start integer, passage_end integer)
LANGUAGE plpgsql AS $$
DECLARE
  c semsim.collections;
  per_document integer;
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
  per_document := CASE WHEN c.chunk_size IS NULL THEN 1 ELSE 4 END;
  PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
  PERFORM set_config('hnsw.ef_search',
    greatest(current_setting('hnsw.ef_search')::integer, least(per_document * candidates, 1000))::text, true);
  RETURN QUERY EXECUTE format($q$
    WITH dense_hits AS MATERIALIZED (
      SELECT e.document_id AS id, e.passage,
             ((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision AS distance
      FROM semsim.embeddings e JOIN semsim.documents d ON d.id = e.document_id
      WHERE e.collection_id = %3$s AND e.model_name = %4$L AND ($4::jsonb IS NULL OR d.metadata @> $4::jsonb)
      ORDER BY distance LIMIT $10 * $5),
    dense_best AS (
      SELECT h.id, min(h.distance) AS distance FROM dense_hits h GROUP BY h.id ORDER BY distance LIMIT $5),
    dense AS (SELECT h.id, h.distance, row_number() OVER (ORDER BY h.distance, h.id) AS rank FROM dense_best h),
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
    scored AS (SELECT cd.id, {BM25.format(tsv="cd.tsv")} AS score FROM candidates cd),
    lexical AS (
      SELECT s.id, s.score, row_number() OVER (ORDER BY s.score DESC, s.id) AS rank
      FROM scored s ORDER BY s.score DESC, s.id LIMIT $5),
    fused AS (
      SELECT coalesce(dn.id, lx.id) AS id,
             coalesce($7 / ($6 + dn.rank), 0.0) + coalesce($8 / ($6 + lx.rank), 0.0) AS score,
             dn.rank AS dense_rank, lx.rank AS lexical_rank, lx.score AS lexical_score
      FROM dense dn FULL JOIN lexical lx ON dn.id = lx.id),
    best AS (
      SELECT d.external_id, d.text, d.metadata, p.distance, f.score, f.dense_rank, f.lexical_rank,
             coalesce(f.lexical_score, {BM25.format(tsv="d.tsv")}) AS lexical_score,
             p.passage, p.passage_start, p.passage_end
      FROM fused f JOIN semsim.documents d ON d.id = f.id
      LEFT JOIN LATERAL (
        SELECT e.passage, e.passage_start, e.passage_end,
               ((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision AS distance
        FROM semsim.embeddings e WHERE e.document_id = f.id AND e.model_name = %4$L
        ORDER BY distance, e.passage LIMIT 1) p ON true
      ORDER BY f.score DESC, f.id LIMIT $3)
    SELECT b.external_id, b.text, b.metadata, semsim.similarity(%6$L, b.distance), b.distance,
           b.score, b.dense_rank, b.lexical_rank, b.lexical_score,
           b.passage, b.passage_start, coalesce(b.passage_end, char_length(b.text))
    FROM best b ORDER BY b.score DESC$q$,
    c.dimension, semsim.distance_operator(c.metric), c.id, c.model_name, c.text_search_config, c.metric)
  USING query_vector, query_text, k, filter, candidates, rrf_k, dense_weight, lexical_weight, 2000, per_document;
END
$$;
"""

HYBRID_SIGNATURE = (
    "semsim.hybrid_search(text, text, vector, integer, jsonb, integer, integer, double precision, double precision)"
)
DROP_FUNCTIONS = f"""
DROP FUNCTION {HYBRID_SIGNATURE};
DROP FUNCTION semsim.search(text, vector, integer, jsonb);
DROP FUNCTION semsim.similar(text, text, integer, jsonb);
DROP FUNCTION semsim._search(semsim.collections, vector, integer, jsonb, bigint);
"""


def upgrade() -> None:
    op.execute(
        "ALTER TABLE semsim.collections ADD COLUMN chunk_size integer, ADD COLUMN chunk_overlap integer,"
        " ADD CONSTRAINT ck_collections_chunk CHECK ((chunk_size IS NULL AND chunk_overlap IS NULL)"
        " OR (chunk_size >= 16 AND chunk_overlap >= 0 AND chunk_overlap < chunk_size))"
    )
    # Constant defaults: a catalogue change, no rewrite of the table or of its HNSW indexes.
    op.execute(
        "ALTER TABLE semsim.embeddings ADD COLUMN passage integer NOT NULL DEFAULT 0,"
        " ADD COLUMN passage_start integer NOT NULL DEFAULT 0, ADD COLUMN passage_end integer"
    )
    op.execute(
        "ALTER TABLE semsim.embeddings DROP CONSTRAINT pk_embeddings,"
        " ADD CONSTRAINT pk_embeddings PRIMARY KEY (document_id, model_name, passage)"
    )
    op.execute(DROP_FUNCTIONS)
    op.execute(SEARCH_FUNCTIONS)
    op.execute(HYBRID_FUNCTION)


#: what a downgrade past this revision loses (`semsim db downgrade` says it, and wants --yes)
DOWNGRADE_LOSES = (
    "the collections' passage settings (chunk size and overlap) and the vectors of every passage but the first "
    "(split texts are marked stale: semsim reconcile encodes them whole)"
)


def downgrade() -> None:
    # Back to one vector per document: the other passages go, and passage 0 of a split text
    # (one that ends before its text does) stands for its first passage only. It stays, to be
    # searched, but with a hash no text has: stale, so that reconcile encodes the whole text,
    # here or after an upgrade again (which would otherwise take it as the text's vector).
    op.execute("DELETE FROM semsim.embeddings WHERE passage > 0")
    op.execute(f"UPDATE semsim.embeddings SET text_hash = '{STALE_HASH}' WHERE passage_end IS NOT NULL")
    op.execute(DROP_FUNCTIONS)
    op.execute(
        "ALTER TABLE semsim.embeddings DROP CONSTRAINT pk_embeddings,"
        " ADD CONSTRAINT pk_embeddings PRIMARY KEY (document_id, model_name)"
    )
    op.execute("ALTER TABLE semsim.embeddings DROP COLUMN passage_end, DROP COLUMN passage_start, DROP COLUMN passage")
    op.execute(
        "ALTER TABLE semsim.collections DROP CONSTRAINT ck_collections_chunk,"
        " DROP COLUMN chunk_overlap, DROP COLUMN chunk_size"
    )
    _restore_functions()


#: not a SHA-256 in hex: matches no document's text_hash
STALE_HASH = "stale: first passage only (downgraded from 0007)"


def _restore_functions() -> None:
    """The functions of 0001 and 0005, from their revisions' own text."""
    here = Path(__file__).parent
    initial = runpy.run_path(str(here / "0001_initial.py"))["FUNCTIONS"]
    op.execute("CREATE FUNCTION semsim._search" + initial.split("CREATE FUNCTION semsim._search", 1)[1])
    op.execute(runpy.run_path(str(here / "0005_lexical_search.py"))["HYBRID_FUNCTION"])
