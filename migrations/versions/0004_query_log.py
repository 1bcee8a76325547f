"""semsim.query_log: the searches and FAQ questions semsim_pg.insights logs (when the log is on).

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-29

One row per logged query: its text (or only its hash), the top results and their scores, whether
an FAQ answered it, the latency, the encoder model and the query vector. The vector column has no
fixed dimension (several models may log into one table), so it carries no index: grouping reads
one collection's unanswered rows of one window, which (collection, created_at) finds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "query_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("collection", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("mode", sa.Text),
        sa.Column("k", sa.Integer),
        sa.Column("query_text", sa.Text),
        sa.Column("query_hash", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text),
        sa.Column("embedding", Vector()),
        sa.Column("result_ids", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("result_scores", ARRAY(sa.Float), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("top_score", sa.Float),
        sa.Column("answered", sa.Boolean),
        sa.Column("latency_ms", sa.Float),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_as", sa.Text),
        sa.CheckConstraint("kind IN ('search', 'faq')", name="ck_query_log_kind"),
        schema="semsim",
    )
    op.create_index("ix_query_log_collection_created_at", "query_log", ["collection", "created_at"], schema="semsim")
    op.create_index("ix_query_log_created_at", "query_log", ["created_at"], schema="semsim")


#: what a downgrade past this revision loses (`semsim db downgrade` says it, and wants --yes)
DOWNGRADE_LOSES = "the whole query log"


def downgrade() -> None:
    op.drop_table("query_log", schema="semsim")
