"""Measured inter-layer interactions: table ``autocomp_interactions``.

Older databases simply have none (a study measures them when ``--interactions`` asks).

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "autocomp_interactions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("autocomp_studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("study_id", "key"),
    )
    op.create_index("ix_autocomp_interactions_study_id", "autocomp_interactions", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_autocomp_interactions_study_id", table_name="autocomp_interactions")
    op.drop_table("autocomp_interactions")
