"""Schema revisions of the study database (Alembic), applied when a :class:`Store` opens it.

The revisions live in ``autocomp/store/migrations/versions``; their version table is
``autocomp_alembic_version``, because Optuna's tables in the same database keep theirs in
``alembic_version``. A database from before Alembic (autocomp tables, no version table) is
revision ``0001``. Every upgrade runs in one transaction under a lock (SQLite ``BEGIN
IMMEDIATE``, a PostgreSQL advisory lock), so controllers opening one database at once upgrade it
once; an up-to-date database is only read.

Writing a revision: change :mod:`autocomp.store.models`, then let Alembic draft the migration
against a database at the previous head (made by the code before the change), and review it::

    from alembic import command
    from sqlalchemy import create_engine
    with create_engine("sqlite:///head.db").begin() as conn:
        command.revision(alembic_config(conn), "what changed", autogenerate=True, rev_id="0003")

Example:
    >>> from sqlalchemy import create_engine
    >>> engine = create_engine("sqlite://")
    >>> with engine.begin() as conn:
    ...     upgrade(conn)
    ...     current_revision(conn) == head_revision(), schema_diff(conn)
    (True, [])
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from autocomp.errors import StoreError
from autocomp.store.models import Base

VERSION_TABLE = "autocomp_alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")
PRE_ALEMBIC = "0001"            # what a database with autocomp tables and no version table holds
_ADVISORY_LOCK = 0x6175746F636F  # "autoco": one key for every autocomp schema upgrade on a server


def include_name(name: str | None, type_: str, _parents: dict[str, Any]) -> bool:
    """Only autocomp's tables are compared and migrated (Optuna's share the database)."""
    return type_ != "table" or name in Base.metadata.tables


def alembic_config(connection: Connection) -> Config:
    """An Alembic config whose ``env.py`` runs on ``connection`` (inside its transaction)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    """The newest revision this autocomp knows."""
    return _script().get_current_head()


def known_revisions() -> set[str]:
    return {s.revision for s in _script().walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    """The database's revision; ``None`` when it has no autocomp version table (yet)."""
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade (from nothing, or from the stored revision) to ``revision``."""
    command.upgrade(alembic_config(connection), revision)


def stamp(connection: Connection, revision: str) -> None:
    """Record ``revision`` without running anything (the schema is known to be that one)."""
    command.stamp(alembic_config(connection), revision)


def schema_diff(connection: Connection) -> list:
    """What Alembic's autogenerate finds between the database and the models (``[]``: none)."""
    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE, "compare_type": True,
                                                       "include_name": include_name})
    return compare_metadata(ctx, Base.metadata)


def ensure_schema(engine: Engine, url: str, migrate: bool = True, busy: float = 30.0) -> None:
    """Bring the database at ``engine`` to the head revision, or say why it cannot be read.

    A new database is created at head; an older one (or one from before Alembic) is upgraded;
    one newer than this autocomp raises :class:`StoreError` and is left untouched. With
    ``migrate=False`` nothing is written: an older database is an error, an empty one is left
    empty. ``busy`` is how long (seconds) a SQLite upgrade waits for another writer's lock.
    """
    head = head_revision()
    with engine.connect() as conn:   # the common case, an up-to-date database, is only read
        rev = current_revision(conn)
        if rev == head:
            return
        _check_known(rev, url)
        legacy = rev is None and inspect(conn).has_table("autocomp_studies")
    older = StoreError(f"database {url} has schema revision {rev or PRE_ALEMBIC} and this autocomp reads "
                       f"{head}: open it once with write access to upgrade it")
    if not migrate:
        if rev is None and not legacy:
            return
        raise older
    try:
        _upgrade_locked(engine, url, head, busy)
    except OperationalError as e:
        if "readonly" in str(e.orig or e):
            raise older from e
        raise


def _upgrade_locked(engine: Engine, url: str, head: str, busy: float) -> None:
    with _locked(engine, busy) as conn:
        rev = current_revision(conn)          # another controller may have upgraded it meanwhile
        if rev == head:
            return
        _check_known(rev, url)
        if rev is None and not inspect(conn).has_table("autocomp_studies"):
            Base.metadata.create_all(conn)
            stamp(conn, "head")
            return
        if rev is None:
            stamp(conn, PRE_ALEMBIC)
        upgrade(conn)
        # A table that the autocomp which wrote the database never had is created at head.
        Base.metadata.create_all(conn)


def _check_known(rev: str | None, url: str) -> None:
    if rev is not None and rev not in known_revisions():
        raise StoreError(f"database {url} was written by a newer autocomp (schema revision {rev}); upgrade autocomp")


@contextmanager
def _locked(engine: Engine, busy: float) -> Iterator[Connection]:
    """A connection in a transaction that no other autocomp upgrade runs alongside."""
    backend = engine.url.get_backend_name()
    database = engine.url.database or ""
    if backend == "sqlite" and database not in ("", ":memory:") and "mode=memory" not in database:
        # pysqlite would start its transaction only at the first INSERT: take the write lock
        # first (BEGIN IMMEDIATE waits up to ``busy`` for another writer), on a private engine.
        locked = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": busy})
        event.listen(locked, "connect", lambda dbapi_conn, _rec: setattr(dbapi_conn, "isolation_level", None))
        event.listen(locked, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            with locked.begin() as conn:
                yield conn
        finally:
            locked.dispose()
        return
    with engine.begin() as conn:
        if backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        yield conn
