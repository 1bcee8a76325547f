"""The SQL functions refuse what the Python API refuses, with a message that names the fix.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

``semsim.search`` and ``semsim.similar`` (through ``semsim._search``) and
``semsim.hybrid_search`` took arguments the Python API refuses and answered with a bare
PostgreSQL error or a wrong result: a k past the integer range failed on ``4 * k`` (computed
before any check) as ``integer out of range``; a zero vector on a cosine collection returned
similarity NaN; ``rrf_k => -1`` divided by zero; negative weights inverted the ranking and NaN
weights scored NaN. They now raise ``invalid_parameter_value`` (SQLSTATE 22023) with the bounds
and wording of ``semsim_pg.validation`` (``check_k``, ``check_fusion``, ``check_vectors``):
k and candidates from 1 to ``MAX_K`` (1000), rrf_k at least 0, weights finite and at least 0,
no zero vector where the metric needs a direction (cosine). NaN and infinity need no check here:
pgvector's vector type refuses them itself. Every other behaviour, the signatures and the
statements are 0007's ``_search`` and 0009's ``hybrid_search``; downgrade restores those texts.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_HERE = Path(__file__).parent
_SEARCH_FUNCTIONS = runpy.run_path(str(_HERE / "0007_passages.py"))["SEARCH_FUNCTIONS"]
_HYBRID_BEFORE = runpy.run_path(str(_HERE / "0009_hybrid_function_plain_tsvectors.py"))["HYBRID_FUNCTION"]

# The bounds are written out, not read from semsim_pg.validation, so that this revision's text
# never changes under a database that ran it; tests/test_sql_function_checks.py checks that the
# messages are the Python API's.
_INVALID = "USING ERRCODE = 'invalid_parameter_value'"
_K_CHECK = f"""  IF k IS NULL OR k < 1 OR k > 1000 THEN
    RAISE EXCEPTION 'semsim: k must be a whole number from 1 to 1000, got %', k {_INVALID};
  END IF;
"""


def _zero_check(vector: str) -> str:
    """Cosine has no direction for a zero vector (semsim_pg.sql.METRICS' needs_direction)."""
    return f"""  IF c.metric = 'cosine' AND vector_norm({vector}) = 0 THEN
    RAISE EXCEPTION 'semsim: the query vector is all zeros: cosine similarity is undefined for it'
      {_INVALID}, HINT = 'Give a vector with at least one non-zero value.';
  END IF;
"""


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:  # pragma: no cover - the earlier revisions' text is fixed
        raise RuntimeError(f"0010: the earlier function no longer holds {old!r}")
    return text.replace(old, new, 1)


# semsim._search alone (search and similar call it and are unchanged).
SEARCH_BEFORE = _replace_once(
    _SEARCH_FUNCTIONS.split("CREATE FUNCTION semsim.search(", 1)[0].strip() + "\n",
    "CREATE FUNCTION semsim._search(",
    "CREATE OR REPLACE FUNCTION semsim._search(",
)
# 4 * k is computed once k is known to be in range, not in DECLARE, before any check.
SEARCH_FUNCTION = _replace_once(SEARCH_BEFORE, "  n integer := 4 * k;\n", "  n integer;\n")
SEARCH_FUNCTION = _replace_once(
    SEARCH_FUNCTION,
    """  IF k IS NULL OR k < 1 THEN
    RAISE EXCEPTION 'semsim: k must be at least 1, got %', k;
  END IF;
""",
    _K_CHECK + _zero_check("query") + "  n := 4 * k;\n",
)

HYBRID_BEFORE = _HYBRID_BEFORE  # already CREATE OR REPLACE
HYBRID_FUNCTION = _replace_once(
    HYBRID_BEFORE,
    """  IF k IS NULL OR k < 1 OR candidates IS NULL OR candidates < 1 THEN
    RAISE EXCEPTION 'semsim: k and candidates must be at least 1, got % and %', k, candidates;
  END IF;
""",
    _K_CHECK
    + f"""  IF candidates IS NULL OR candidates < 1 OR candidates > 1000 THEN
    RAISE EXCEPTION 'semsim: candidates must be a whole number from 1 to 1000, got %', candidates {_INVALID};
  END IF;
  IF rrf_k IS NULL OR rrf_k < 0 THEN
    RAISE EXCEPTION 'semsim: rrf_k must be a whole number of at least 0, got %', rrf_k {_INVALID};
  END IF;
  -- PostgreSQL orders NaN above every number, Infinity included: w < 'Infinity' refuses both.
  IF NOT coalesce(dense_weight >= 0 AND dense_weight < 'Infinity' AND lexical_weight >= 0
                  AND lexical_weight < 'Infinity', false) THEN
    RAISE EXCEPTION 'semsim: weights must be two numbers >= 0 (dense_weight, lexical_weight), got % and %',
      dense_weight, lexical_weight {_INVALID};
  END IF;
"""
    + _zero_check("query_vector"),
)


def upgrade() -> None:
    op.execute(SEARCH_FUNCTION)
    op.execute(HYBRID_FUNCTION)


def downgrade() -> None:
    op.execute(SEARCH_BEFORE)
    op.execute(HYBRID_BEFORE)
