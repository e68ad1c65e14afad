"""A controller SIGKILLed during refinement: the resumed study ends with the same Optuna history,
the same front, the same evaluations and no policy evaluated twice, as an uninterrupted run with
the same seed. The kill lands wherever the controller happens to be (asking a batch in memory,
evaluating it, or writing its trials); every one of those resumes identically."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ARGS = ["search", "--points", "3", "--refine", "8", "--workers", "2", "--seed", "3"]


def _cli(db: Path, study: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autocomp.cli", *ARGS, "--study", study, "--db", str(db), *extra]
    return subprocess.Popen(cmd, env={**os.environ, "RAY_ADDRESS": ""}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
    out = subprocess.run([sys.executable, "-m", "autocomp.cli", "front", "show", study, "--db", str(db), "--json"],
                         capture_output=True, text=True, check=True).stdout
    pts = [(p["policy_id"], p["accuracy"], p["size"], p["source"]) for p in json.loads(out)["points"]]
    return evals, pts, trials


def c_trials(db: Path, study: str) -> list:
    import optuna

    return [(t.number, t.state, t.params, t.values, t.user_attrs.get("policy_id"))
            for t in optuna.load_study(study_name=study, storage=f"sqlite:///{db}").trials]


def test_killed_refinement_resumes_to_the_uninterrupted_front(tmp_path):
    ref_db, db = tmp_path / "ref.db", tmp_path / "killed.db"
    ref = _cli(ref_db, "r")
    proc = _cli(db, "r")
    try:
        deadline = time.time() + 400
        while _refined(db) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "search finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = _refined(db)
        assert 2 <= killed_at < 8
        out, err = ref.communicate(timeout=400)
        assert ref.returncode == 0, err
    finally:
        for p in (proc, ref):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    res = subprocess.run([sys.executable, "-m", "autocomp.cli", *ARGS, "--study", "r", "--db", str(db)],
                         env={**os.environ, "RAY_ADDRESS": ""}, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr
    assert _refined(db) == _refined(ref_db) == 8
    evals, front, trials = _state(db, "r")
    ref_evals, ref_front, ref_trials = _state(ref_db, "r")
    assert evals == ref_evals                 # the same policies, the same accuracies, none twice
    assert front == ref_front
    assert trials == ref_trials               # the same Optuna history, trial for trial
    assert any(src == "optuna" for *_, src in front) or len(front) >= 5
