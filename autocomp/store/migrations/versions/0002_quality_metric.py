"""Evaluations keep any quality metric: ``accuracy`` becomes ``quality``, plus ``quality_metric``.

Rows written before this revision measured accuracy, so they get ``quality_metric = 'accuracy'``.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite copies the table (constraints and indexes included); PostgreSQL alters it.
    with op.batch_alter_table("autocomp_evaluations") as batch:
        batch.alter_column("accuracy", new_column_name="quality", existing_type=sa.Float(), existing_nullable=False)
        batch.add_column(sa.Column("quality_metric", sa.String(64), nullable=False, server_default="accuracy"))


def downgrade() -> None:
    with op.batch_alter_table("autocomp_evaluations") as batch:
        batch.drop_column("quality_metric")
        batch.alter_column("quality", new_column_name="accuracy", existing_type=sa.Float(), existing_nullable=False)
