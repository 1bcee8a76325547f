"""The SQL functions work under any search_path, leave the session's settings as they found them,
read a filter as the Python API does, and default hybrid_search's candidates to max(k, 100).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

* **search_path.** ``semsim.search``, ``semsim.similar``, ``semsim._search`` and
  ``semsim.hybrid_search`` resolved pgvector's names (``vector_dims``, the ``vector`` type of
  similar's variable, ``<=>``) through the caller's search_path: a session whose path left out
  pgvector's schema got ``function vector_dims(public.vector) does not exist``. Each is now
  pinned to ``pg_catalog, semsim, <pgvector's schema>, pg_temp``, the schema read from
  ``pg_extension`` when this revision runs (pg_catalog first and pg_temp last, so that no object
  of a writable schema stands in for a built-in). After ``ALTER EXTENSION vector SET SCHEMA``,
  ``semsim db downgrade 0011`` and ``semsim db upgrade`` pin the new one.
* **Settings.** ``set_config(..., true)`` inside the functions lasted to the end of the caller's
  transaction: after a call, ``hnsw.iterative_scan`` stayed ``relaxed_order`` and
  ``hnsw.ef_search`` raised for every later query of it. The functions now read both first and
  set them back after their last statement; an error aborts the (sub)transaction, which restores
  them too. Not SET clauses: one would replace the caller's ``ef_search``, which the functions
  take as a floor (``SET hnsw.ef_search = 200`` raises their recall), and a SET clause of a
  parameter that no loaded library defines yet can be created by a superuser only (a schema
  owner's restore of a pg_dump lost the functions). The new ``_filter_condition`` gets
  ``_search``'s EXECUTE grants (a reader role of a site that revoked PUBLIC's keeps working).
* **Filters.** A JSON list as a filter value means "any of" (the Python API's ``metadata @>
  {key: value}`` per value, ORed, per key ANDed: ``semsim._filter_condition`` writes that
  condition, with the values as literals, for both functions). A filter that is not a JSON
  object, an empty key or an empty list is refused with the Python API's words (SQLSTATE 22023);
  NULL and ``{}`` filter nothing, as before.
* **hybrid_search.** ``candidates`` defaults to NULL, meaning max(k, 100) as in Python (a fixed
  100 gave k 500 at most 200 rows); ``candidates < k``, weights (0, 0) and an empty query text
  are refused with ``semsim_pg.validation.check_hybrid``'s and the encoder's words.

The signatures stay (only hybrid_search's default for candidates changes, which CREATE OR
REPLACE allows), so grants and callers keep working. Downgrade restores 0011's definitions
exactly: the function texts, no SET clauses, the default 100, and no ``_filter_condition``.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_HERE = Path(__file__).parent
SEARCH_BEFORE = runpy.run_path(str(_HERE / "0010_sql_function_checks.py"))["SEARCH_FUNCTION"]
HYBRID_BEFORE = runpy.run_path(str(_HERE / "0011_hybrid_function_passage_choice.py"))["HYBRID_FUNCTION"]

_SEARCH = "semsim._search(semsim.collections, vector, integer, jsonb, bigint)"
_PUBLIC = ("semsim.search(text, vector, integer, jsonb)", "semsim.similar(text, text, integer, jsonb)")
_HYBRID = (
    "semsim.hybrid_search(text, text, vector, integer, jsonb, integer, integer, double precision, double precision)"
)
_FILTER = "semsim._filter_condition(jsonb)"
_INVALID = "ERRCODE = 'invalid_parameter_value'"


def _replace(text: str, old: str, new: str, count: int = 1) -> str:
    if text.count(old) != count:  # pragma: no cover - the earlier revisions' text is fixed
        raise RuntimeError(f"0012: the earlier function does not hold {old!r} {count} times")
    return text.replace(old, new)


# The words are semsim_pg.store.search._check_filter's, with JSON's type names (tests check them).
FILTER_FUNCTION = rf"""
CREATE FUNCTION semsim._filter_condition(filter jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  key text;
  value jsonb;
  alternatives text;
  conditions text[] := '{{}}';
BEGIN
  IF filter IS NULL THEN
    RETURN 'true';
  END IF;
  IF jsonb_typeof(filter) <> 'object' THEN
    RAISE EXCEPTION 'semsim: filter must be a mapping of metadata key to value, got %', jsonb_typeof(filter)
      USING {_INVALID}, HINT = 'Give a JSON object, e.g. ''{{"topic": "finance"}}'', or for any of several '
        'values a list: ''{{"topic": ["finance", "tech"]}}''; NULL filters nothing.';
  END IF;
  FOR key, value IN SELECT f.key, f.value FROM jsonb_each(filter) f ORDER BY f.key LOOP
    IF key = '' THEN
      RAISE EXCEPTION 'semsim: filter keys must be non-empty texts, got %', quote_literal(key) USING {_INVALID};
    END IF;
    -- One containment per value, as the Python API's: the GIN index on metadata serves each.
    SELECT string_agg(format('d.metadata @> %L::jsonb', jsonb_build_object(key, a.value)), ' OR ')
      INTO alternatives
      FROM jsonb_array_elements(CASE jsonb_typeof(value) WHEN 'array' THEN value ELSE jsonb_build_array(value) END) a;
    IF alternatives IS NULL THEN
      RAISE EXCEPTION 'semsim: the filter on % lists no values', quote_literal(key) USING {_INVALID};
    END IF;
    conditions := conditions || ('(' || alternatives || ')');
  END LOOP;
  RETURN coalesce(nullif(array_to_string(conditions, ' AND '), ''), 'true');
END
$$;
"""

_OLD_FILTER_3 = "($3::jsonb IS NULL OR d.metadata @> $3::jsonb)"
_OLD_FILTER_4 = "($4::jsonb IS NULL OR d.metadata @> $4::jsonb)"
# pgvector's settings are read before the function changes them and set back after its last
# statement (an error rolls them back with the transaction or savepoint). Not SET clauses: a
# function with a SET clause of a parameter no loaded library defines yet can be created by a
# superuser only, so a schema owner's pg_dump restore (check_function_bodies off, pgvector's
# library not loaded) lost the functions.
_RESTORE = (
    "  PERFORM set_config('hnsw.ef_search', caller_ef_search, true);\n"
    "  PERFORM set_config('hnsw.iterative_scan', caller_iterative_scan, true);\n"
)
_DECLARE = "  condition text;\n  caller_ef_search text;\n  caller_iterative_scan text;\n"
# the filter is checked and written once, the caller's settings read, then set for the search
_OLD_SCAN = "  PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);\n"
_SET_UP = (
    "  condition := semsim._filter_condition(filter);\n"
    "  caller_ef_search := current_setting('hnsw.ef_search');\n"
    "  caller_iterative_scan := current_setting('hnsw.iterative_scan');\n" + _OLD_SCAN
)

SEARCH_FUNCTION = _replace(SEARCH_BEFORE, "  found integer;\n", "  found integer;\n" + _DECLARE)
SEARCH_FUNCTION = _replace(SEARCH_FUNCTION, _OLD_SCAN, _SET_UP)
SEARCH_FUNCTION = _replace(SEARCH_FUNCTION, _OLD_FILTER_3, "%6$s", 3)
SEARCH_FUNCTION = _replace(
    SEARCH_FUNCTION, "c.id, c.model_name, c.metric)\n", "c.id, c.model_name, c.metric, condition)\n", 2
)
SEARCH_FUNCTION = _replace(SEARCH_FUNCTION, "c.id, c.model_name)\n", "c.id, c.model_name, c.metric, condition)\n")
SEARCH_FUNCTION = _replace(
    SEARCH_FUNCTION,
    "  USING query, n, filter, exclude_id, k;\n",
    "  USING query, n, filter, exclude_id, k;\n" + _RESTORE,
)
# the unsplit collection's early return restores them too
SEARCH_FUNCTION = _replace(
    SEARCH_FUNCTION,
    "    USING query, k, filter, exclude_id;\n    RETURN;\n",
    "    USING query, k, filter, exclude_id;\n  " + _RESTORE.replace("\n  ", "\n    ") + "    RETURN;\n",
)

_HYBRID_CHECKS = f"""  IF query_text !~ '\\S' THEN
    RAISE EXCEPTION 'semsim: the query is empty: got %. Give a text with at least one word', quote_literal(query_text)
      USING {_INVALID};
  END IF;
"""
HYBRID_FUNCTION = _replace(HYBRID_BEFORE, "  candidates integer DEFAULT 100,", "  candidates integer DEFAULT NULL,")
HYBRID_FUNCTION = _replace(HYBRID_FUNCTION, "  per_document integer;\n", "  per_document integer;\n" + _DECLARE)
HYBRID_FUNCTION = _replace(
    HYBRID_FUNCTION,
    "    RAISE EXCEPTION 'semsim: hybrid_search needs the query as text and as a vector';\n  END IF;\n",
    "    RAISE EXCEPTION 'semsim: hybrid_search needs the query as text and as a vector';\n  END IF;\n"
    + _HYBRID_CHECKS,
)
# NULL (the default): max(k, 100), as the Python API's DEFAULT_CANDIDATES; k is checked first.
HYBRID_FUNCTION = _replace(
    HYBRID_FUNCTION,
    "  IF candidates IS NULL OR candidates < 1",
    "  candidates := coalesce(candidates, greatest(k, 100));\n  IF candidates IS NULL OR candidates < 1",
)
HYBRID_FUNCTION = _replace(
    HYBRID_FUNCTION,
    "  IF c.metric = 'cosine' AND vector_norm(query_vector) = 0 THEN\n",
    f"""  IF dense_weight = 0 AND lexical_weight = 0 THEN
    RAISE EXCEPTION 'semsim: weights (%, %) give every hit the score 0 (an arbitrary order): give at least one weight '
      'above 0, e.g. (1, 0) for the dense side alone or (0, 1) for the lexical side alone',
      dense_weight, lexical_weight USING {_INVALID};
  END IF;
  IF candidates < k THEN
    RAISE EXCEPTION 'semsim: candidates=% is below k=%: each side of a hybrid search brings at most `candidates` '
      'documents, so fewer than k hits could come back. Give candidates of at least k (default max(k, 100))',
      candidates, k USING {_INVALID};
  END IF;
  IF c.metric = 'cosine' AND vector_norm(query_vector) = 0 THEN
""",
)
HYBRID_FUNCTION = _replace(HYBRID_FUNCTION, _OLD_SCAN, _SET_UP)
HYBRID_FUNCTION = _replace(HYBRID_FUNCTION, _OLD_FILTER_4, "%7$s", 2)
HYBRID_FUNCTION = _replace(
    HYBRID_FUNCTION, "c.text_search_config, c.metric)\n", "c.text_search_config, c.metric, condition)\n"
)
HYBRID_FUNCTION = _replace(
    HYBRID_FUNCTION, "    c.chunk_size IS NOT NULL;\n", "    c.chunk_size IS NOT NULL;\n" + _RESTORE
)


# The new helper is called by semsim._search with the caller's rights: whoever may run _search
# (a reader role granted EXECUTE, with PUBLIC's revoked as hardened sites do) may run it too.
_SAME_GRANTS = f"""
DO $$
DECLARE
  acl aclitem[] := (SELECT proacl FROM pg_proc WHERE oid = '{_SEARCH}'::regprocedure);
  item record;
BEGIN
  IF acl IS NULL THEN
    RETURN;  -- _search has the default privileges (PUBLIC may execute): so has the helper
  END IF;
  REVOKE EXECUTE ON FUNCTION {_FILTER} FROM PUBLIC;
  FOR item IN SELECT grantee FROM aclexplode(acl) WHERE privilege_type = 'EXECUTE' LOOP
    IF item.grantee = 0 THEN
      GRANT EXECUTE ON FUNCTION {_FILTER} TO PUBLIC;
    ELSE
      EXECUTE format('GRANT EXECUTE ON FUNCTION {_FILTER} TO %s', item.grantee::regrole);
    END IF;
  END LOOP;
END
$$;
"""


def pinned_search_path(vector_schema: str) -> str:
    """The search_path the functions run with; ``vector_schema`` quoted as an identifier."""
    schemas = ["pg_catalog", "semsim"]
    if vector_schema not in schemas:
        schemas.append(vector_schema)
    return ", ".join([*schemas, "pg_temp"])


def upgrade() -> None:
    vector_schema = (
        op.get_bind()
        .exec_driver_sql("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
        .scalar_one()
    )
    path = pinned_search_path(vector_schema)
    op.execute(FILTER_FUNCTION)
    op.execute(SEARCH_FUNCTION)
    op.execute(HYBRID_FUNCTION)
    op.execute(_SAME_GRANTS)
    for function in (_FILTER, _SEARCH, _HYBRID, *_PUBLIC):
        op.execute(f"ALTER FUNCTION {function} SET search_path = {path}")


def downgrade() -> None:
    # CREATE OR REPLACE takes the SET clauses away with the text (0011's had none).
    op.execute(SEARCH_BEFORE)
    op.execute(HYBRID_BEFORE)
    for function in _PUBLIC:
        op.execute(f"ALTER FUNCTION {function} RESET search_path")
    op.execute(f"DROP FUNCTION {_FILTER}")
