"""The words' GIN index: one per collection, partial on ``collection_id``, like the HNSW indexes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

With one GIN index over every collection's documents (0005), a word's matches in the other
collections were read and rechecked against the table too (counting four query words'
documents among 5,183 SciFact abstracts beside 125,000 other documents: 4.8 ms, against 1.4 ms
with a partial index), and the planner, misjudging the shared index, at times read the
collection's rows one by one through the unique (collection_id, external_id) index instead
(39 ms for the four words, 153 ms a lexical search). Each collection gets
``documents_tsv_c<id>``; semsim creates it with the collection and drops it with it. The lexical
statements (and the SQL functions, whose dynamic SQL writes the collection id as a literal)
name the collection as a literal, so the planner proves the predicate.

Each index is built by one read of the documents table, during which writes to the table wait:
on a large database, upgrade at a quiet moment (creating a collection does the same once).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PER_COLLECTION = r"""
DO $$
DECLARE c record;
BEGIN
  FOR c IN SELECT id FROM semsim.collections ORDER BY id LOOP
    EXECUTE format(
      'CREATE INDEX IF NOT EXISTS documents_tsv_c%1$s ON semsim.documents USING gin (tsv) WHERE collection_id = %1$s',
      c.id);
  END LOOP;
END
$$;
"""

DROP_PER_COLLECTION = r"""
DO $$
DECLARE i record;
BEGIN
  FOR i IN SELECT indexname FROM pg_indexes
           WHERE schemaname = 'semsim' AND tablename = 'documents' AND indexname LIKE 'documents\_tsv\_c%' LOOP
    EXECUTE format('DROP INDEX semsim.%I', i.indexname);
  END LOOP;
END
$$;
"""


def upgrade() -> None:
    op.execute(PER_COLLECTION)
    op.execute("DROP INDEX IF EXISTS semsim.ix_documents_tsv")


def downgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_documents_tsv ON semsim.documents USING gin (tsv)")
    op.execute(DROP_PER_COLLECTION)
