"""A controller SIGKILLed during QAT trials: the same run again stores only the trials still
missing (the finished one is neither re-run nor stored twice) and the study ends ``done``.

The controller is a process of its own running the ``trials`` stage on a stored study (what
``autocomp search --trials qat`` runs after its sweep, under the same status tracking) on a local
Ray it starts, as the CLI does; the kill (of its process group, Ray included, as in
``test_refine_kill.py``) lands after its first trial is stored, while the second trains (one
trial at a time)."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from autocomp.store import Store
from autocomp.trial_options import qat_options, trial_kind
from autocomp.trials import pending_trials, top_policies

from ._trials import make_study

CONTROLLER = """
import sys
from autocomp.stages import load_context, tracked
from autocomp.stages.trials import TrialsSpec, run_trials
from autocomp.store import Store
from autocomp.workers.session import ensure_ray

ensure_ray(None, num_cpus=2)
store = Store(sys.argv[1])
study = store.get_study("k")
with tracked(store, study, resume="autocomp search --study k --trials qat --top 2 --qat epochs=1"):
    res = run_trials(store, study, load_context(store, study), TrialsSpec("qat", top=2, qat="epochs=1"), workers=1)
print("stored", res.evaluated, "done", res.done)
"""


def _env(tmp_path) -> dict:
    return {**os.environ, "RAY_ADDRESS": "", "AUTOCOMP_TUNE_DIR": str(tmp_path / "tune")}


def _controller(db, tmp_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CONTROLLER, f"sqlite:///{db}"], start_new_session=True,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _qat_rows(db) -> list[tuple]:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("select id, policy_id, kind, quality from autocomp_evaluations "
                             "where kind like 'qat%' order by id").fetchall()
    except sqlite3.OperationalError:
        return []


def test_killed_trials_resume_without_rerunning_finished_ones(tmp_path, digits):
    db = tmp_path / "k.db"
    store = Store(f"sqlite:///{db}")
    st, ctx, pols = make_study(store, "k", digits)
    proc = _controller(db, tmp_path)
    try:
        deadline = time.time() + 400
        while not _qat_rows(db) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, f"controller ended before the kill: {proc.communicate()[1][-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = _qat_rows(db)
    assert len(first) == 1 and store.get_study("k").status == "running"   # killed: nobody recorded an end

    again = subprocess.run([sys.executable, "-c", CONTROLLER, f"sqlite:///{db}"], capture_output=True, text=True,
                           env=_env(tmp_path), timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stored 1 done 2" in again.stdout                        # only the trial the kill cut short
    rows = _qat_rows(db)
    assert rows[0] == first[0] and len(rows) == 2                   # the finished trial kept, not re-run
    assert {r[1] for r in rows} == {pols["mixed"].id, pols["w2"].id} and {r[2] for r in rows} == {
        trial_kind(qat_options({"epochs": 1}))}
    assert store.get_study("k").status == "done"
    assert pending_trials(store, st, top_policies(store, st, 2), qat_options({"epochs": 1}), 1) == {}
