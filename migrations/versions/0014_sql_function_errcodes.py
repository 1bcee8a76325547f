"""Every argument error of the SQL functions carries a SQLSTATE of its kind, and a filter value
that is not a list also matches a list that holds it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

* **SQLSTATEs.** ``semsim.search``, ``semsim.similar`` (through ``semsim._search``) and
  ``semsim.hybrid_search`` raised a bad k, a blank query or a bad filter as
  ``invalid_parameter_value`` (22023), but an unknown collection, a vector of the wrong
  dimension, a NULL vector or query text and an unknown ``similar`` id as a plain RAISE
  (``raise_exception``, P0001), which a client cannot tell from any other error. Now: a bad
  argument (NULL, wrong dimension, out of range, blank, a malformed filter) is 22023
  (``invalid_parameter_value``); a collection or document that does not exist is 42704
  (``undefined_object``); a document stored without a vector of the collection's model yet is
  55000 (``object_not_in_prerequisite_state``). A NULL collection name or ``similar`` id is
  named as NULL (it was "no collection named <NULL>"). The words are unchanged.
* **Lists in metadata.** A filter value matched by containment of ``{key: value}``, so a
  document whose ``tags`` is ``["x", "y"]`` was found by ``{"tags": [["x"]]}`` only, not by
  ``{"tags": "x"}``. ``_filter_condition`` now writes, for a value that is not a list,
  ``metadata @> {key: value} OR metadata @> {key: [value]}``: a scalar key equal to the value
  matches as before (the second containment needs a list), and a list that holds it matches
  too. Both are containments the GIN index on metadata answers (a BitmapOr). The Python API
  (``semsim_pg.store.search._check_filter``) reads a filter the same way.

The signatures, grants and pinned search_path stay (CREATE OR REPLACE drops a function's SET
clauses: the path 0012 pinned is set again). Downgrade restores 0013's definitions exactly.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_HERE = Path(__file__).parent
_SESSION = runpy.run_path(str(_HERE / "0012_sql_function_session.py"))
_PASSAGES = runpy.run_path(str(_HERE / "0007_passages.py"))
_WORDS = runpy.run_path(str(_HERE / "0013_words_nfc.py"))

SEARCH_BEFORE: str = _SESSION["SEARCH_FUNCTION"]  # semsim._search, as 0012 wrote it
HYBRID_BEFORE: str = _WORDS["HYBRID_FUNCTION"]  # semsim.hybrid_search, as 0013 wrote it
# CREATE OR REPLACE for the functions first made with CREATE (their text is otherwise 0012's and 0007's)
FILTER_BEFORE: str = _SESSION["FILTER_FUNCTION"].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
PUBLIC_BEFORE: str = "CREATE OR REPLACE FUNCTION semsim.search(" + _PASSAGES["SEARCH_FUNCTIONS"].split(
    "CREATE FUNCTION semsim.search(", 1
)[1].replace("CREATE FUNCTION semsim.similar(", "CREATE OR REPLACE FUNCTION semsim.similar(", 1)
_FUNCTIONS = (_SESSION["_FILTER"], _SESSION["_SEARCH"], _SESSION["_HYBRID"], *_SESSION["_PUBLIC"])

INVALID = "ERRCODE = 'invalid_parameter_value'"  # 22023
UNDEFINED = "ERRCODE = 'undefined_object'"  # 42704
NOT_READY = "ERRCODE = 'object_not_in_prerequisite_state'"  # 55000


def _replace(text: str, old: str, new: str, count: int = 1) -> str:
    if text.count(old) != count:  # pragma: no cover - the earlier revisions' text is fixed
        raise RuntimeError(f"0014: the earlier function does not hold {old!r} {count} times")
    return text.replace(old, new)


_NO_COLLECTION = """    RAISE EXCEPTION 'semsim: no collection named "%"', collection_name
      USING HINT = 'SELECT name FROM semsim.collections lists the collections.';
"""
_NO_COLLECTION_NOW = f"""    IF collection_name IS NULL THEN
      RAISE EXCEPTION 'semsim: collection_name is NULL: give the name of a collection' USING {INVALID};
    END IF;
    RAISE EXCEPTION 'semsim: no collection named "%"', collection_name
      USING {UNDEFINED}, HINT = 'SELECT name FROM semsim.collections lists the collections.';
"""
_DIMENSIONS = "      USING HINT = 'Encode the query with the collection''s model.';\n"
_DIMENSIONS_NOW = f"      USING {INVALID}, HINT = 'Encode the query with the collection''s model.';\n"

SEARCH_FUNCTION = _replace(
    SEARCH_BEFORE,
    "RAISE EXCEPTION 'semsim: the query vector is NULL' USING HINT",
    f"RAISE EXCEPTION 'semsim: the query vector is NULL' USING {INVALID}, HINT",
)
SEARCH_FUNCTION = _replace(SEARCH_FUNCTION, _DIMENSIONS, _DIMENSIONS_NOW)

PUBLIC_FUNCTIONS = _replace(PUBLIC_BEFORE, _NO_COLLECTION, _NO_COLLECTION_NOW, 2)
PUBLIC_FUNCTIONS = _replace(
    PUBLIC_FUNCTIONS,
    '    RAISE EXCEPTION \'semsim: collection "%" has no document with id "%"\', collection_name, source_id;\n',
    f"""    IF source_id IS NULL THEN
      RAISE EXCEPTION 'semsim: source_id is NULL: give the id of a stored document' USING {INVALID};
    END IF;
    RAISE EXCEPTION 'semsim: collection "%" has no document with id "%"', collection_name, source_id
      USING {UNDEFINED};
""",
)
PUBLIC_FUNCTIONS = _replace(
    PUBLIC_FUNCTIONS,
    "      USING HINT = 'Ingest it again with semsim ingest, or wait for the encoder.';\n",
    f"      USING {NOT_READY}, HINT = 'Ingest it again with semsim ingest, or wait for the encoder.';\n",
)

HYBRID_FUNCTION = _replace(HYBRID_BEFORE, _NO_COLLECTION, _NO_COLLECTION_NOW)
HYBRID_FUNCTION = _replace(
    HYBRID_FUNCTION,
    "    RAISE EXCEPTION 'semsim: hybrid_search needs the query as text and as a vector';\n",
    f"    RAISE EXCEPTION 'semsim: hybrid_search needs the query as text and as a vector' USING {INVALID};\n",
)
HYBRID_FUNCTION = _replace(HYBRID_FUNCTION, _DIMENSIONS, _DIMENSIONS_NOW)

# A value that is not a list: equal to the key's value, or held by the key's list.
FILTER_FUNCTION = _replace(
    FILTER_BEFORE,
    "    SELECT string_agg(format('d.metadata @> %L::jsonb', jsonb_build_object(key, a.value)), ' OR ')\n",
    """    SELECT string_agg(CASE jsonb_typeof(a.value)
             WHEN 'array' THEN format('d.metadata @> %L::jsonb', jsonb_build_object(key, a.value))
             ELSE format('d.metadata @> %L::jsonb OR d.metadata @> %L::jsonb', jsonb_build_object(key, a.value),
                         jsonb_build_object(key, jsonb_build_array(a.value))) END, ' OR ')
""",
)


def _pin() -> None:
    """The search_path 0012 pinned, set again on every function replaced."""
    vector_schema = (
        op.get_bind()
        .exec_driver_sql("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
        .scalar_one()
    )
    path = _SESSION["pinned_search_path"](vector_schema)
    for function in _FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} SET search_path = {path}")


def upgrade() -> None:
    op.execute(FILTER_FUNCTION)
    op.execute(SEARCH_FUNCTION)
    op.execute(PUBLIC_FUNCTIONS)
    op.execute(HYBRID_FUNCTION)
    _pin()


def downgrade() -> None:
    op.execute(FILTER_BEFORE)
    op.execute(SEARCH_BEFORE)
    op.execute(PUBLIC_BEFORE)
    op.execute(HYBRID_BEFORE)
    _pin()
