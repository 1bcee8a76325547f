"""documents.text_hash computed by PostgreSQL, so a text changed by any writer is seen as stale.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

With the hash a generated column, an ``UPDATE semsim.documents SET text = ...`` from psql leaves
the document's vector visibly stale (its hash no longer matches), and ``semsim reconcile``
re-encodes it. ``convert_to(t, 'UTF8')`` is only STABLE in PostgreSQL's catalog because it
depends on the database encoding, but its result (the UTF-8 bytes of the characters) does not,
so the wrapper is truthfully IMMUTABLE.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE FUNCTION semsim.text_hash(t text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE"
        " AS $$ SELECT encode(sha256(convert_to(t, 'UTF8')), 'hex') $$"
    )
    op.execute("ALTER TABLE semsim.documents DROP COLUMN text_hash")
    op.execute(
        "ALTER TABLE semsim.documents ADD COLUMN text_hash text NOT NULL"
        " GENERATED ALWAYS AS (semsim.text_hash(text)) STORED"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE semsim.documents DROP COLUMN text_hash")
    op.execute("ALTER TABLE semsim.documents ADD COLUMN text_hash text")
    op.execute("UPDATE semsim.documents SET text_hash = semsim.text_hash(text)")
    op.execute("ALTER TABLE semsim.documents ALTER COLUMN text_hash SET NOT NULL")
    op.execute("DROP FUNCTION semsim.text_hash(text)")
