"""``autocomp search`` end to end through the CLI: real Ray, real SQLite, the real digits model."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.policy import Policy, apply

runner = CliRunner()


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'study.db'}"
    r = runner.invoke(app, ["search", "--study", "digits-e2e", "--db", db])
    assert r.exit_code == 0, r.output
    return db, r


def _front(db: str, study: str = "digits-e2e") -> dict:
    r = runner.invoke(app, ["front", "show", study, "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_search_prints_front_with_baselines(searched):
    _, r = searched
    out = r.stdout
    assert "Pareto front" in out and "uniform w4a8" in out and "uniform w3a8" in out
    for stage in ("profile", "proxy", "allocate", "evaluate"):
        assert stage in r.output


def test_front_quality_on_digits(searched):
    db, _ = searched
    doc = _front(db)
    pts = doc["points"]
    front = [p for p in pts if not p["baseline"]]
    assert len(front) >= 5
    for p in pts:
        assert {"policy_id", "accuracy", "size", "bitops", "avg_bits", "baseline"} <= set(p)
    base = {p["label"]: p for p in pts if p["baseline"]}
    assert {"uniform w8a8", "uniform w6a8", "uniform w4a8", "uniform w3a8", "uniform w2a8", "fp32"} <= set(base)
    for bits in (4, 3):
        u = base[f"uniform w{bits}a8"]
        best = max((p["accuracy"] for p in front if p["size"] <= u["size"] * (1 + 1e-9)), default=-1)
        assert best >= u["accuracy"], f"mixed precision loses to uniform {bits}-bit at equal size"


def test_studies_list(searched):
    db, _ = searched
    r = runner.invoke(app, ["studies", "list", "--db", db, "--json"])
    assert r.exit_code == 0
    (row,) = json.loads(r.stdout)
    assert row["name"] == "digits-e2e" and row["status"] == "done"
    assert row["layers"] == 9 and row["evaluations"] == row["policies"] >= 12
    r = runner.invoke(app, ["studies", "list", "--db", db])
    assert "digits-e2e" in r.stdout


def test_export_round_trip_and_apply(searched, tmp_path, digits):
    db, _ = searched
    pid = next(p for p in _front(db)["points"] if not p["baseline"] and p["accuracy"] > 0.9)["policy_id"]
    out = tmp_path / "policy.json"
    r = runner.invoke(app, ["front", "export", "digits-e2e", pid[:8], "-o", str(out), "--db", db])
    assert r.exit_code == 0, r.output
    pol = Policy.from_dict(json.loads(out.read_text()))
    assert pol.id == pid and len(pol) == 9
    small = apply(digits.model(), Policy.from_choices((n, c.__class__(c.w_bits, 32, c.prune)) for n, c in pol.layers))
    assert digits.evaluate(small) > 0.5


def test_resume_evaluates_nothing_again(searched):
    db, _ = searched
    before = _front(db)
    r = runner.invoke(app, ["search", "--study", "digits-e2e", "--db", db])
    assert r.exit_code == 0, r.output
    assert "0 evaluated now" in r.stdout
    assert _front(db) == before


def test_env_var_db(searched, monkeypatch):
    db, _ = searched
    monkeypatch.setenv("AUTOCOMP_DB", db)
    r = runner.invoke(app, ["front", "show", "digits-e2e"])
    assert r.exit_code == 0 and "uniform w4a8" in r.stdout


# ---- bad input: one line, exit code 2, nothing invalid stored ---------------------------------

def _one_line_error(r, *fragments: str) -> str:
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in r.output, r.output
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.parametrize("args,fragments", [
    (["--model", "no_such_model"], ["unknown model"]),
    (["--model", "no_such_pkg_zz.mod:make"], ["cannot import"]),
    (["--budget", "size<=abc"], ["malformed budget"]),
    (["--budget", "weight<=3"], ["unknown budget metric"]),
    (["--proxy", "nope"], ["unknown proxy"]),
    (["--space", "nope"], ["unknown search space"]),
])
def test_bad_input_exits_2(args, fragments, tmp_path, ray_session):
    db = tmp_path / "bad.db"
    _one_line_error(runner.invoke(app, ["search", "--study", "x", "--db", str(db), *args]), *fragments)
    # options checked before the database is opened leave no file; later checks leave it empty
    assert not db.exists() or json.loads(runner.invoke(app, ["studies", "list", "--db", str(db), "--json"]).stdout) == []


def test_infeasible_budget_names_the_minimum(tmp_path, ray_session):
    db = tmp_path / "inf.db"
    err = _one_line_error(runner.invoke(app, ["search", "--study", "x", "--db", str(db), "--budget", "size<=1%"]),
                          "infeasible", "smallest achievable size")
    assert "KB" in err and "%" in err
    assert json.loads(runner.invoke(app, ["studies", "list", "--db", str(db), "--json"]).stdout) == []
    _one_line_error(runner.invoke(app, ["search", "--db", str(db), "--budget", "avg_bits<=1.5"]),
                    "smallest achievable avg_bits=2.000")


def test_unreachable_and_unwritable_databases(tmp_path):
    _one_line_error(runner.invoke(app, ["studies", "list", "--db", "postgresql://u@127.0.0.1:1/x"]), "cannot open database")
    _one_line_error(runner.invoke(app, ["studies", "list", "--db", "/nonexistent/dir/x.db"]), "does not exist")
    _one_line_error(runner.invoke(app, ["studies", "list", "--db", str(tmp_path)]), "cannot open database")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    _one_line_error(runner.invoke(app, ["search", "--db", str(junk)]), "database")
    assert junk.read_bytes() == b"this is not a database" * 100
    _one_line_error(runner.invoke(app, ["front", "show", "missing", "--db", str(tmp_path / "e.db")]), "no database file")
    assert not (tmp_path / "e.db").exists()  # a read-only command never creates the database


def test_export_unknown_policy(searched, tmp_path):
    db, _ = searched
    _one_line_error(runner.invoke(app, ["front", "export", "digits-e2e", "zzzz", "-o", str(tmp_path / "p.json"), "--db", db]),
                    "no policy")


# ---- controller killed mid-search ----------------------------------------------------------------

def _count(db_path: Path) -> int:
    try:
        with sqlite3.connect(db_path, timeout=5) as c:
            return c.execute("select count(*) from autocomp_evaluations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_resume_after_controller_killed(searched, tmp_path):
    """SIGKILL the whole `autocomp search` process group mid-evaluation, then resume.

    The killed search is the very command of the ``searched`` study (its own local Ray, both
    CPUs): the same options, so the resumed front must equal that one."""
    db_path = tmp_path / "killed.db"
    cmd = [sys.executable, "-m", "autocomp.cli", "search", "--study", "k", "--db", str(db_path)]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _count(db_path) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "search finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stored = _count(db_path)
    assert stored >= 3
    with sqlite3.connect(db_path) as c:           # killed mid-search: policies still unevaluated
        assert c.execute("select count(*) from autocomp_policies").fetchone()[0] > stored
    r = runner.invoke(app, ["search", "--study", "k", "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert f"{stored} already stored" in r.stdout
    with sqlite3.connect(db_path) as c:
        n_pol = c.execute("select count(*) from autocomp_policies").fetchone()[0]
        n_eval = c.execute("select count(*) from autocomp_evaluations").fetchone()[0]
        dup = c.execute("select count(*) from (select policy_id from autocomp_evaluations group by policy_id having count(*) > 1)").fetchone()[0]
    assert n_eval == n_pol and dup == 0
    # Same seed, same model: the resumed study's front equals the uninterrupted one.
    strip = lambda pts: [(p["policy_id"], p["accuracy"], p["size"]) for p in pts]
    assert strip(_front(f"sqlite:///{db_path}", "k")["points"]) == strip(_front(searched[0])["points"])
