"""``autocomp search --trials qat --top 2`` SIGKILLed during its trials, then run again: the trial
that finished keeps its stored row (same id, not re-run), only the missing one is stored, the
study ends ``done`` and the command exits 0.

The study is one the CLI created (a small digits sweep, ``autocomp search`` without trials); the
trials then run as README's ``autocomp search --study NAME --trials qat --top K`` on it. The killed
controller is the real CLI (``python -m autocomp.cli``) in a process group of its own, on a local
Ray it starts (``RAY_ADDRESS=""``: the rest of the suite shares one Ray session). One trial runs
at a time (``--workers 1``); the kill (of the whole group, Ray included) lands after the first
trial is stored, while the second trains. The sweep and the rerun of the killed command run the
same CLI in this process, on the suite's warm Ray session (a second local Ray, with fresh workers
for the proxy and the sweep's actors, would only add its start-up): the rerun's sweep evaluates
nothing again.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.store import Store
from autocomp.trial_options import qat_options, trial_kind
from autocomp.trials import pending_trials, top_policies
from autocomp.workers.placement import cluster_gpus

STEPS = 8   # optimizer steps per trial: the kill needs a trial in flight, not a good model


def _sweep(db) -> list[str]:
    return ["search", "--study", "k", "--db", str(db), "--points", "3", "--proxy", "quant_mse"]


def _args(db) -> list[str]:
    return [*_sweep(db), "--workers", "1", "--trials", "qat", "--top", "2", "--trial-steps", str(STEPS)]


def _env(tmp_path) -> dict:
    return {**os.environ, "RAY_ADDRESS": "", "AUTOCOMP_TUNE_DIR": str(tmp_path / "tune")}


def _qat_rows(db) -> list[tuple]:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("select id, policy_id, kind, quality from autocomp_evaluations "
                             "where kind like 'qat%' order by id").fetchall()
    except sqlite3.OperationalError:   # no database or no table yet
        return []


def test_cli_killed_during_qat_trials_resumes_without_rerunning_finished_ones(ray_session, tmp_path, monkeypatch):
    db, err = tmp_path / "k.db", tmp_path / "killed.err"
    made = CliRunner().invoke(app, _sweep(db))                  # the study, as the CLI creates it
    assert made.exit_code == 0, made.output[-3000:]
    store = Store(f"sqlite:///{db}")
    swept = len(store.evaluated_ids(store.get_study("k")))
    assert swept > 0 and not _qat_rows(db)
    with open(err, "w") as f:   # a file, not a pipe: nobody reads it while the search runs
        proc = subprocess.Popen([sys.executable, "-m", "autocomp.cli", *_args(db)], start_new_session=True,
                                env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=f)
    try:
        deadline = time.monotonic() + 400
        while not _qat_rows(db) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"search ended before the kill: {err.read_text()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = _qat_rows(db)
    st = store.get_study("k")
    assert len(store.evaluated_ids(st)) == swept                # the killed run's sweep evaluated nothing
    assert len(first) == 1 and st.status == "running"    # killed mid-trials: nobody recorded an end

    monkeypatch.setenv("AUTOCOMP_TUNE_DIR", str(tmp_path / "tune"))
    again = CliRunner().invoke(app, _args(db))                  # the same command, run again
    assert again.exit_code == 0, again.output[-3000:]
    m = re.search(r"(\d+) evaluated now, (\d+) QAT trial\(s\) run, (\d+) already stored", again.stdout)
    assert m, again.stdout
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (0, 1, swept)   # sweep: nothing again
    rows = _qat_rows(db)
    assert len(rows) == 2 and rows[0] == first[0]           # the finished trial kept, not re-run
    st = store.get_study("k")
    top = top_policies(store, st, 2)
    options = qat_options({}, STEPS)
    assert len(top) == 2 and {r[1] for r in rows} == set(top)
    assert {r[2] for r in rows} == {trial_kind(options)}
    assert st.status == "done"
    assert pending_trials(store, st, top, options, 1) == {}
    # where each ran (--device auto): one CPU, and a GPU share only where the cluster has GPUs
    device = "cuda" if cluster_gpus() > 0 else "cpu"
    for e in store.list_evaluations(st, kind=trial_kind(options)):
        held = e.extra["resources"]
        assert (e.extra["device"], e.extra["eval_dtype"], held["CPU"]) == (device, "float32", 1.0)
        assert (held.get("GPU", 0.0) > 0) == (device == "cuda")
