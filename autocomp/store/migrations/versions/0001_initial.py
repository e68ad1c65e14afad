"""The schema before Alembic: studies, layers, scores, policies, evaluations, proxy audits.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _study_fk() -> sa.Column:
    return sa.Column("study_id", sa.Integer(), sa.ForeignKey("autocomp_studies.id", ondelete="CASCADE"), nullable=False)


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "autocomp_studies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_autocomp_studies_name", "autocomp_studies", ["name"], unique=True)
    op.create_table(
        "autocomp_layers",
        sa.Column("id", sa.Integer(), primary_key=True),
        _study_fk(),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.UniqueConstraint("study_id", "name"),
    )
    op.create_table(
        "autocomp_scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        _study_fk(),
        sa.Column("proxy", sa.String(200), nullable=False),
        sa.Column("layer", sa.String(500), nullable=False),
        sa.Column("choice", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.UniqueConstraint("study_id", "proxy", "layer", "choice"),
    )
    op.create_table(
        "autocomp_policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        _study_fk(),
        sa.Column("policy_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("costs", sa.JSON(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        _created_at(),
        sa.UniqueConstraint("study_id", "policy_id"),
    )
    op.create_table(
        "autocomp_evaluations",
        sa.Column("id", sa.Integer(), primary_key=True),
        _study_fk(),
        sa.Column("policy_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("size", sa.Float(), nullable=True),
        sa.Column("bitops", sa.Float(), nullable=True),
        sa.Column("avg_bits", sa.Float(), nullable=True),
        sa.Column("latency", sa.Float(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        _created_at(),
        sa.UniqueConstraint("study_id", "policy_id", "kind"),
    )
    op.create_table(
        "autocomp_proxy_audits",
        sa.Column("id", sa.Integer(), primary_key=True),
        _study_fk(),
        sa.Column("proxy", sa.String(200), nullable=False),
        sa.Column("data", sa.String(32), nullable=False),
        sa.Column("spearman", sa.Float(), nullable=True),
        sa.Column("kendall", sa.Float(), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        _created_at(),
        sa.UniqueConstraint("study_id", "proxy", "data"),
    )
    for table in ("layers", "scores", "policies", "evaluations", "proxy_audits"):
        op.create_index(f"ix_autocomp_{table}_study_id", f"autocomp_{table}", ["study_id"])


def downgrade() -> None:
    for table in ("proxy_audits", "evaluations", "policies", "scores", "layers", "studies"):
        op.drop_table(f"autocomp_{table}")
