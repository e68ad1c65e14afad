"""Proxy research: the audit's within-band Spearman, and table ``autocomp_proxy_records``.

``autocomp_proxy_audits.band_spearman`` is the rank correlation among policies of about the same
cost (older rows have none). ``autocomp_proxy_records`` holds a proxy bench's per-layer
primitives and a proxy evolution's population per generation, one JSON value per key.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("autocomp_proxy_audits") as batch:
        batch.add_column(sa.Column("band_spearman", sa.Float(), nullable=True))
    op.create_table(
        "autocomp_proxy_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("autocomp_studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("study_id", "key"),
    )
    op.create_index("ix_autocomp_proxy_records_study_id", "autocomp_proxy_records", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_autocomp_proxy_records_study_id", table_name="autocomp_proxy_records")
    op.drop_table("autocomp_proxy_records")
    with op.batch_alter_table("autocomp_proxy_audits") as batch:
        batch.drop_column("band_spearman")
