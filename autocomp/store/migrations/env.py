"""Alembic environment of the study database.

Run only through :mod:`autocomp.store.migrate`, which hands over a connection already inside the
transaction (and lock) that the whole upgrade runs in; Optuna's tables in the same database have
their own ``alembic_version`` table and are left alone.
"""
from __future__ import annotations

from alembic import context

from autocomp.store.migrate import VERSION_TABLE, include_name
from autocomp.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("autocomp's migrations run through autocomp.store.migrate (they need its connection)")

# render_as_batch: SQLite alters a table by copying it, which batch mode does on every backend.
context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  include_name=include_name, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
