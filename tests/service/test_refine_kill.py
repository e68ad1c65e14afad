"""A controller SIGKILLed during refinement: the resumed study ends with the same Optuna history,
the same front, the same evaluations and no policy evaluated twice, as an uninterrupted run with
the same seed. The kill lands wherever the controller happens to be (asking a batch in memory,
evaluating it, or writing its trials); every one of those resumes identically.

Only the killed controller is a process of its own (the CLI on a local Ray it starts, killed with
its whole process group); the uninterrupted reference run, meanwhile, and the resumed run run the
same CLI command in this process on the suite's Ray session, which spares two Ray start-ups."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from autocomp.cli import app

REFINE = 6
ARGS = ["search", "--points", "3", "--refine", str(REFINE), "--workers", "2", "--seed", "3", "--proxy", "quant_mse"]
runner = CliRunner()


def _cli(db: Path, study: str, err: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autocomp.cli", *ARGS, "--study", study, "--db", str(db)]
    with open(err, "w") as f:   # a file, not a pipe: nobody reads it while the search runs
        return subprocess.Popen(cmd, env={**os.environ, "RAY_ADDRESS": ""}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=f)


def _in_process(db: Path, study: str):
    r = runner.invoke(app, [*ARGS, "--study", study, "--db", str(db)])
    assert r.exit_code == 0, r.output[-3000:]
    return r


def _kill_after(proc: subprocess.Popen, db: Path, n: int) -> tuple[threading.Thread, dict]:
    """A thread that SIGKILLs ``proc``'s process group once ``db`` holds ``n`` refined evaluations."""
    seen: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + 400
        while _refined(db) < n and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["alive"] = proc.poll() is None
        if seen["alive"]:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        seen["killed_at"] = _refined(db)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t, seen


def _refined(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("select count(*) from autocomp_evaluations e join autocomp_policies p "
                             "on p.policy_id = e.policy_id and p.study_id = e.study_id "
                             "where p.source = 'optuna'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _state(db: Path, study: str) -> tuple[dict, list]:
    with sqlite3.connect(db) as c:
        evals = dict(c.execute("select e.policy_id, e.quality from autocomp_evaluations e join autocomp_studies s "
                               "on s.id = e.study_id where s.name = ?", (study,)).fetchall())
        dup = c.execute("select count(*) from (select study_id, policy_id, kind from autocomp_evaluations "
                        "group by study_id, policy_id, kind having count(*) > 1)").fetchone()[0]
    assert dup == 0
    trials = c_trials(db, study)
    r = runner.invoke(app, ["front", "show", study, "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    pts = [(p["policy_id"], p["accuracy"], p["size"], p["source"]) for p in json.loads(r.stdout)["points"]]
    return evals, pts, trials


def c_trials(db: Path, study: str) -> list:
    import optuna

    return [(t.number, t.state, t.params, t.values, t.user_attrs.get("policy_id"))
            for t in optuna.load_study(study_name=study, storage=f"sqlite:///{db}").trials]


def test_killed_refinement_resumes_to_the_uninterrupted_front(ray_session, tmp_path):
    ref_db, db = tmp_path / "ref.db", tmp_path / "killed.db"
    err = tmp_path / "killed.err"
    proc = _cli(db, "r", err)
    watcher, seen = _kill_after(proc, db, 2)
    try:
        _in_process(ref_db, "r")                     # the uninterrupted run, while the other is killed
        watcher.join(timeout=400)
        assert not watcher.is_alive(), "the killed controller did not end"
        assert seen["alive"], f"search finished before it could be killed: {err.read_text()[-2000:]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert 2 <= seen["killed_at"] < REFINE
    _in_process(db, "r")                             # resumed: the same command again
    assert _refined(db) == _refined(ref_db) == REFINE
    evals, front, trials = _state(db, "r")
    ref_evals, ref_front, ref_trials = _state(ref_db, "r")
    assert evals == ref_evals                 # the same policies, the same accuracies, none twice
    assert front == ref_front
    assert trials == ref_trials               # the same Optuna history, trial for trial
    assert any(src == "optuna" for *_, src in front) or len(front) >= 5
