"""The study database (SQLAlchemy 2): SQLite by default, PostgreSQL on a cluster.

Example:
    >>> from autocomp.store import Store
    >>> store = Store("sqlite://")          # in memory
    >>> study, created = store.open_study("demo", {"model": "digits"})
    >>> created
    True
"""
from __future__ import annotations

from autocomp.store.repository import Store, normalize_url

__all__ = ["Store", "normalize_url"]
