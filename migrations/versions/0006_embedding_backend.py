"""The backend that made each vector: ``embeddings.backend``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Vectors of every backend of one model stay comparable (the backends' quality gate bounds how far
they may move from torch fp32), so a collection may hold vectors of several. The column records
which one made each vector (``torch``, ``torch-bf16``, ``onnx``, ``onnx-int8``), so that a user
who wants bit-identical vectors can re-encode the others (``semsim reembed -c NAME --backend
torch``). NULL means unknown: rows from before this revision and vectors a caller computed and
gave to ``DocumentStore.upsert(vectors=...)``.

Adding a nullable column without a default rewrites nothing: it is instant on a large table.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE semsim.embeddings ADD COLUMN backend text")


#: what a downgrade past this revision loses (`semsim db downgrade` says it, and wants --yes)
DOWNGRADE_LOSES = "which backend made each vector"


def downgrade() -> None:
    op.execute("ALTER TABLE semsim.embeddings DROP COLUMN backend")
