"""Schema migrations: a database written before Alembic (``fixtures/pre_alembic.db``, a default
``autocomp search --study first --refine 4`` on digits made by the code before revision 0002)
opens, lists, shows its front and resumes; a newer database is refused untouched; the migrated
schema equals the models on SQLite and PostgreSQL."""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.errors import StoreError
from autocomp.store import Store
from autocomp.store.migrate import VERSION_TABLE, current_revision, head_revision, schema_diff, upgrade

FIXTURE = Path(__file__).with_name("fixtures") / "pre_alembic.db"
runner = CliRunner()


@pytest.fixture
def old_db(tmp_path) -> Path:
    """A private copy of the pre-Alembic fixture (the committed file is never opened)."""
    path = tmp_path / "v1.db"
    shutil.copyfile(FIXTURE, path)
    return path


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _schema(url: str) -> dict:
    """autocomp's tables as the database reflects them (column order and constraint names aside)."""
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        out = {}
        for t in sorted(n for n in insp.get_table_names() if n.startswith("autocomp_") and n != VERSION_TABLE):
            out[t] = {
                "columns": sorted((c["name"], str(c["type"]), c["nullable"], c["default"]) for c in insp.get_columns(t)),
                "pk": insp.get_pk_constraint(t)["constrained_columns"],
                "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                               f["options"].get("ondelete")) for f in insp.get_foreign_keys(t)),
                "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(t)),
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)),
            }
        return out
    finally:
        engine.dispose()


def _old_rows(path: Path) -> dict[str, dict]:
    """Study 'first''s PTQ evaluations as the old code stored them, read with plain sqlite3."""
    with sqlite3.connect(path) as c:
        rows = c.execute("SELECT e.policy_id, p.source, e.accuracy, e.size, e.bitops, e.avg_bits "
                         "FROM autocomp_evaluations e JOIN autocomp_studies s ON s.id = e.study_id "
                         "JOIN autocomp_policies p ON p.study_id = e.study_id AND p.policy_id = e.policy_id "
                         "WHERE s.name = 'first' AND e.kind = 'ptq'").fetchall()
    return {r[0]: {"source": r[1], "values": tuple(r[2:])} for r in rows}


def _expected_front(path: Path) -> dict[str, tuple]:
    """Non-dominated searched policies (accuracy up, size down: the study's front costs) plus
    every baseline, with the values the old rows hold."""
    rows = _old_rows(path)
    searched = {pid: r["values"] for pid, r in rows.items() if r["source"] not in ("uniform", "fp32")}

    def dominated(v: tuple) -> bool:
        return any(w[0] >= v[0] and w[1] <= v[1] and (w[0] > v[0] or w[1] < v[1]) for w in searched.values())

    front = {pid: v for pid, v in searched.items() if not dominated(v)}
    assert len(front) >= 5 and len(rows) > len(front)           # the fixture has a front to compare
    return {**front, **{pid: r["values"] for pid, r in rows.items() if r["source"] in ("uniform", "fp32")}}


def _front_json(url: str) -> dict[str, tuple]:
    r = runner.invoke(app, ["front", "show", "first", "--db", url, "--json"])
    assert r.exit_code == 0, r.output
    pts = json.loads(r.stdout)["points"]
    assert {p["quality_metric"] for p in pts} == {"accuracy"}
    return {p["policy_id"]: (p["quality"], p["size"], p["bitops"], p["avg_bits"]) for p in pts}


def _fixture_schema(tmp_path: Path) -> dict:
    copy = tmp_path / "pristine.db"      # reading the committed file in place would leave WAL files
    shutil.copyfile(FIXTURE, copy)
    return _schema(_url(copy))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the schema ---------------------------------------------------------------------------------
def test_revision_0001_is_the_schema_before_alembic(tmp_path):
    engine = create_engine(_url(tmp_path / "r1.db"))
    with engine.begin() as conn:
        upgrade(conn, "0001")
    engine.dispose()
    assert _schema(_url(tmp_path / "r1.db")) == _fixture_schema(tmp_path)


def test_head_equals_the_models_however_the_database_got_there(tmp_path, old_db):
    Store(_url(tmp_path / "new.db")).dispose()                  # created at head
    Store(_url(old_db)).dispose()                                # pre-Alembic, upgraded
    engine = create_engine(_url(tmp_path / "steps.db"))
    with engine.begin() as conn:                                 # every revision from nothing
        upgrade(conn, "0001")
        assert schema_diff(conn) != []                           # the check sees a missing migration
        upgrade(conn)
    engine.dispose()
    for path in (tmp_path / "new.db", old_db, tmp_path / "steps.db"):
        engine = create_engine(_url(path))
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            assert schema_diff(conn) == [], path.name            # a model change needs a migration
        engine.dispose()
    assert _schema(_url(old_db)) == _schema(_url(tmp_path / "new.db")) == _schema(_url(tmp_path / "steps.db"))


def test_upgrade_keeps_every_row_and_marks_them_accuracy(old_db):
    before = _old_rows(old_db)
    store = Store(_url(old_db))
    evals = store.list_evaluations(store.get_study("first"))
    assert {e.policy_id: (e.quality, e.size, e.bitops, e.avg_bits) for e in evals} == \
        {pid: r["values"] for pid, r in before.items()}
    assert {e.quality_metric for e in evals} == {"accuracy"}
    m = evals[0].metrics()
    assert (m.policy_id, m.quality, m.costs["size"]) == (evals[0].policy_id, evals[0].quality, evals[0].size)
    assert "policy_id" not in m.extras and "node" in m.extras
    with sqlite3.connect(old_db) as c:                           # Optuna's own version is not touched
        assert c.execute("SELECT version_num FROM alembic_version").fetchall() == [("v3.2.0.a",)]
        assert c.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(head_revision(),)]


def test_downgrade_to_0001_gives_the_old_schema_and_rows_back(old_db, tmp_path):
    from alembic import command

    from autocomp.store.migrate import alembic_config

    before = _old_rows(old_db)
    Store(_url(old_db)).dispose()
    engine = create_engine(_url(old_db))
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    engine.dispose()
    assert _schema(_url(old_db)) == _fixture_schema(tmp_path)
    assert _old_rows(old_db) == before


# ---- the old database through the CLI -----------------------------------------------------------
def test_pre_alembic_database_lists_with_its_counts(old_db):
    with sqlite3.connect(old_db) as c:
        counts = {t: c.execute(f"SELECT count(*) FROM autocomp_{t}").fetchone()[0]
                  for t in ("layers", "policies", "evaluations")}
    r = runner.invoke(app, ["studies", "list", "--db", _url(old_db), "--json"])
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.stdout)
    assert (row["name"], row["status"], row["model"], row["budget"]) == ("first", "done", "digits", "size<=25%")
    assert {t: row[t] for t in counts} == counts
    table = runner.invoke(app, ["studies", "list", "--db", _url(old_db)])
    assert table.exit_code == 0 and "first" in table.stdout and str(counts["evaluations"]) in table.stdout


def test_pre_alembic_database_shows_the_same_front(old_db):
    expected = _expected_front(old_db)
    assert _front_json(_url(old_db)) == expected
    r = runner.invoke(app, ["front", "show", "first", "--db", _url(old_db)])
    assert r.exit_code == 0, r.output
    assert all(pid in r.stdout for pid in expected)


def test_the_refinements_optuna_study_still_loads(old_db):
    with sqlite3.connect(old_db) as c:
        old = c.execute("SELECT t.number, v.objective, v.value FROM trials t JOIN trial_values v USING (trial_id) "
                        "WHERE t.state = 'COMPLETE'").fetchall()
    Store(_url(old_db)).dispose()
    study = optuna.load_study(study_name="first", storage=_url(old_db))
    got = [(t.number, i, v) for t in study.get_trials(deepcopy=False) for i, v in enumerate(t.values or [])]
    assert sorted(got) == sorted(old) and len(old) > 0


@pytest.mark.slow
def test_a_resumed_search_stores_nothing_and_keeps_the_front(ray_session, old_db):
    expected = _expected_front(old_db)
    with sqlite3.connect(old_db) as c:
        before = [c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("autocomp_policies", "autocomp_evaluations", "trials")]
    r = runner.invoke(app, ["search", "--study", "first", "--db", _url(old_db), "--refine", "4"])
    assert r.exit_code == 0, r.output
    assert "0 evaluated now" in r.stdout
    with sqlite3.connect(old_db) as c:
        after = [c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("autocomp_policies", "autocomp_evaluations", "trials")]
    assert after == before
    assert _front_json(_url(old_db)) == expected


# ---- databases this code must not change --------------------------------------------------------
def test_a_newer_database_is_one_error_line_and_left_byte_identical(old_db):
    Store(_url(old_db)).dispose()
    with sqlite3.connect(old_db) as c:
        c.execute(f"UPDATE {VERSION_TABLE} SET version_num = '0999'")
    digest = _sha(old_db)
    for args in (["studies", "list"], ["front", "show", "first"], ["search", "--study", "first"]):
        r = runner.invoke(app, [*args, "--db", _url(old_db)])
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.strip().splitlines() == [
            f"error: database {_url(old_db)} was written by a newer autocomp (schema revision 0999); upgrade autocomp"]
        assert _sha(old_db) == digest
    with pytest.raises(StoreError, match="newer autocomp"):
        Store(_url(old_db), create=False)
    assert _sha(old_db) == digest


def test_a_read_only_database_lists_when_current_and_says_why_when_old(old_db, tmp_path):
    read_only = lambda path: f"sqlite:///file:{path}?mode=ro&uri=true"
    digest, rows = _sha(old_db), len(_old_rows(old_db))
    for store_args in ((read_only(old_db),), (_url(old_db), False)):
        with pytest.raises(StoreError, match="has schema revision 0001 .* open it once with write access"):
            Store(*store_args)
        assert _sha(old_db) == digest                            # nothing was migrated
    Store(_url(old_db)).dispose()
    store = Store(read_only(old_db))
    assert [s["name"] for s in store.list_studies()] == ["first"]
    assert len(store.list_evaluations(store.get_study("first"))) == rows
    empty = tmp_path / "empty.db"
    Store(_url(empty), create=False).dispose()                   # create=False creates nothing
    with sqlite3.connect(empty) as c:
        assert c.execute("SELECT name FROM sqlite_master").fetchall() == []


# ---- PostgreSQL ---------------------------------------------------------------------------------
def test_postgresql_upgrades_a_0001_database_and_keeps_its_rows(pg_url):
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        upgrade(conn, "0001")
        conn.execute(text("INSERT INTO autocomp_studies (name, status, config, schema_version) "
                          "VALUES ('old', 'done', '{\"model\": \"digits\"}', 1)"))
        conn.execute(text("INSERT INTO autocomp_evaluations (study_id, policy_id, kind, accuracy, size, extra) "
                          "SELECT id, 'p1', 'ptq', 0.875, 1024.0, '{\"node\": \"n1\"}' FROM autocomp_studies"))
    store = Store(pg_url)
    [ev] = store.list_evaluations(store.get_study("old"))
    assert (ev.policy_id, ev.quality, ev.quality_metric, ev.size, ev.extra) == ("p1", 0.875, "accuracy", 1024.0, {"node": "n1"})
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        assert schema_diff(conn) == []
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0999'"))
    engine.dispose()
    store.dispose()
    with pytest.raises(StoreError, match=r"written by a newer autocomp \(schema revision 0999\); upgrade autocomp"):
        Store(pg_url)
