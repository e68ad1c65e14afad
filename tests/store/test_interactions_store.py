"""Revision 0003 (``autocomp_interactions``): old databases gain the table and keep their rows;
``save_interactions`` / ``load_interactions`` round-trip the value and replace by key."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, inspect

from autocomp.interactions import Interactions
from autocomp.store import Store
from autocomp.store.migrate import current_revision, head_revision, schema_diff, upgrade

FIXTURE = Path(__file__).with_name("fixtures") / "pre_alembic.db"


def _interactions(reference: float = 0.95) -> Interactions:
    return Interactions("loss_delta", 2, 2, "accuracy", reference,
                        {"conv1": {"w2a8": 0.9, "w3a8": 0.94}, "fc": {"w2a8": 0.93, "w3a8": 0.95}},
                        {("conv1", "fc"): {("w2a8", "w2a8"): 0.8, ("w2a8", "w3a8"): 0.88,
                                           ("w3a8", "w2a8"): 0.91, ("w3a8", "w3a8"): 0.94}})


def test_pre_alembic_database_gains_the_table_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)
    with sqlite3.connect(path) as c:
        before = c.execute("SELECT count(*) FROM autocomp_evaluations").fetchone()[0]
    store = Store(f"sqlite:///{path}")
    study = store.get_study("first")
    assert len(store.list_evaluations(study)) == before > 0
    assert store.load_interactions(study, _interactions().key) is None
    store.save_interactions(study, _interactions())
    assert store.load_interactions(study, _interactions().key) == _interactions()
    store.dispose()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        assert current_revision(conn) == head_revision() and schema_diff(conn) == []   # 0003 or later
        assert "autocomp_interactions" in inspect(conn).get_table_names()
    engine.dispose()


def test_downgrade_to_0002_drops_only_the_table(tmp_path):
    from alembic import command

    from autocomp.store.migrate import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.begin() as conn:
        upgrade(conn)
        command.downgrade(alembic_config(conn), "0002")
        names = set(inspect(conn).get_table_names())
    engine.dispose()
    assert "autocomp_interactions" not in names and "autocomp_evaluations" in names


def test_save_replaces_by_key_and_keeps_other_keys(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    study, _ = store.open_study("s")
    other = Interactions("hessian_trace", 2, 2, "accuracy", 0.95, {}, {})
    store.save_interactions(study, _interactions(0.95))
    store.save_interactions(study, other)
    store.save_interactions(study, _interactions(0.97))      # re-measured: replaces its own key only
    assert store.load_interactions(study, _interactions().key).reference == 0.97
    assert store.load_interactions(study, other.key) == other
    second, _ = store.open_study("t")
    assert store.load_interactions(second, other.key) is None   # per study
    store.dispose()
