"""semsim.hybrid_search() shows, for a document its words found, a passage that holds them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

In a collection whose texts are split into passages, the SQL function showed every hit's passage
nearest to the query vector, also for a document found only by a word of another passage: a
reranker reading that passage never saw what found the document. It now chooses as
``semsim_pg.queries.hybrid`` (hybrid mode) does: for a document the lexical side found, the
nearest by meaning of its passages whose own words (BM25 of the passage's text for the same
terms) match the query, else, and for a document only the meaning found, its nearest passage.
``similarity`` and ``distance`` stay the document's (its nearest passage's). The choice reads only
the k hits' passages, each parsed once (MATERIALIZED CTEs, as the Python statement); an unsplit
collection's one passage per document is not parsed at all. ``semsim.search`` and
``semsim.similar`` search by meaning only, so their nearest passage is already the one that found
the hit; there is no lexical SQL function. The signature, the checks and their messages, and the
rest of the statement are 0010's; downgrade restores 0010's text.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_HERE = Path(__file__).parent
HYBRID_BEFORE = runpy.run_path(str(_HERE / "0010_sql_function_checks.py"))["HYBRID_FUNCTION"]
_BM25 = runpy.run_path(str(_HERE / "0007_passages.py"))["BM25"]


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:  # pragma: no cover - the earlier revisions' text is fixed
        raise RuntimeError(f"0011: the earlier function no longer holds {old!r}")
    return text.replace(old, new, 1)


# The k best hits first, so that only their passages are read: the choice parses each passage's
# text, which 0010 never did. $11: the collection splits its texts (else its one passage per
# document needs no words: tsv stays NULL and BM25 of it is 0).
_CHOICE = f"""    top_hits AS (
      SELECT f.id, f.score, f.dense_rank, f.lexical_rank, f.lexical_score
      FROM fused f ORDER BY f.score DESC, f.id LIMIT $3),
    hit_passages AS MATERIALIZED (
      SELECT e.document_id AS id, e.passage, e.passage_start, e.passage_end, h.lexical_rank,
             ((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision AS distance,
             CASE WHEN $11 THEN to_tsvector(%5$L::regconfig, substr(d.text, e.passage_start + 1,
               coalesce(e.passage_end, char_length(d.text)) - e.passage_start)) END AS tsv
      FROM top_hits h JOIN semsim.documents d ON d.id = h.id
      JOIN semsim.embeddings e ON e.document_id = h.id AND e.model_name = %4$L),
    shown_passage AS MATERIALIZED (
      SELECT DISTINCT ON (hp.id) hp.id, hp.passage, hp.passage_start, hp.passage_end,
             min(hp.distance) OVER (PARTITION BY hp.id) AS distance
      FROM hit_passages hp
      ORDER BY hp.id, (hp.lexical_rank IS NOT NULL AND {_BM25.format(tsv="hp.tsv")} > 0) DESC,
               hp.distance, hp.passage),
    best AS (
"""
HYBRID_FUNCTION = _replace_once(HYBRID_BEFORE, "    best AS (\n", _CHOICE)
HYBRID_FUNCTION = _replace_once(
    HYBRID_FUNCTION,
    """      FROM fused f JOIN semsim.documents d ON d.id = f.id
      LEFT JOIN LATERAL (
        SELECT e.passage, e.passage_start, e.passage_end,
               ((e.embedding::vector(%1$s)) %2$s $1::vector(%1$s))::double precision AS distance
        FROM semsim.embeddings e WHERE e.document_id = f.id AND e.model_name = %4$L
        ORDER BY distance, e.passage LIMIT 1) p ON true
""",
    """      FROM top_hits f JOIN semsim.documents d ON d.id = f.id
      LEFT JOIN shown_passage p ON p.id = f.id
""",
)
HYBRID_FUNCTION = _replace_once(
    HYBRID_FUNCTION,
    " 2000, per_document;\n",
    " 2000, per_document,\n    c.chunk_size IS NOT NULL;\n",
)


def upgrade() -> None:
    op.execute(HYBRID_FUNCTION)


def downgrade() -> None:
    op.execute(HYBRID_BEFORE)
