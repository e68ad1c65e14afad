"""Several controllers writing to one study at once: PostgreSQL keeps every row; SQLite keeps
every row or says clearly that it needs a server database (never a silent loss)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from autocomp.store import Store

WRITER = str(Path(__file__).with_name("_writer.py"))


def _run_writers(url: str, study: str, processes: int, per_process: int, tmp_path: Path) -> list[dict]:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, WRITER, url, study, str(w), str(per_process), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(processes)]
    try:
        for p in procs:  # every writer has imported SQLAlchemy and connected: start together
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        go.touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_eight_processes_leave_exactly_160_evaluations_on_postgresql(pg_url, tmp_path):
    results = _run_writers(pg_url, "shared", 8, 20, tmp_path)

    assert [r["error"] for r in results] == [None] * 8
    assert sum(r["stored"] for r in results) == 160
    store = Store(pg_url)
    assert [s["name"] for s in store.list_studies()] == ["shared"]   # one study, not eight
    evals = store.list_evaluations(store.get_study("shared"))
    assert len(evals) == 160
    assert len({e.policy_id for e in evals}) == 160
    assert {e.policy_id for e in evals} == {f"w{w}-p{i}" for w in range(8) for i in range(20)}


def test_sqlite_under_several_writers_keeps_every_row_or_says_use_a_server_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    results = _run_writers(url, "shared", 4, 20, tmp_path)

    store = Store(url)
    evals = store.list_evaluations(store.get_study("shared"))
    # Whatever a writer was told it stored is there; a writer that could not write says why.
    assert len(evals) == sum(r["stored"] for r in results)
    assert len({e.policy_id for e in evals}) == len(evals)
    for r in results:
        if r["error"] is not None:
            assert "use a server database" in r["error"], r["error"]
        else:
            assert r["stored"] == 20
    assert [s["name"] for s in store.list_studies()] == ["shared"]


_OPENER = """
import os, sys, time
from autocomp.store import Store
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
store = Store(sys.argv[1])          # every opener races to upgrade the old database
print(len(store.list_evaluations(store.get_study("first"))), flush=True)
"""


def test_four_processes_opening_a_pre_alembic_database_upgrade_it_once(tmp_path):
    import shutil
    import sqlite3

    from autocomp.store.migrate import VERSION_TABLE, head_revision

    path = tmp_path / "old.db"
    shutil.copyfile(Path(__file__).parents[1] / "store" / "fixtures" / "pre_alembic.db", path)
    with sqlite3.connect(path) as c:
        rows = c.execute("SELECT count(*) FROM autocomp_evaluations").fetchone()[0]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, f"sqlite:///{path}", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, outs)] == [(0, str(rows))] * 4, outs
    with sqlite3.connect(path) as c:
        assert c.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(head_revision(),)]
        assert c.execute("SELECT count(*), min(quality_metric) FROM autocomp_evaluations").fetchone() == (rows, "accuracy")
