"""Alembic migrations of the study database (run by :mod:`autocomp.store.migrate`, never imported)."""
