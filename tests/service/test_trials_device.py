"""QAT trials and devices (``--trials qat`` with ``--device``, ``--eval-dtype``): what a trial asks
Tune for, where ``auto`` resolves, the one-line refusals (``--device cuda`` without a GPU, a
placement given as a ``--qat`` option), and, on a machine with CUDA, trials that really train on
the GPU under the same trial names as on the CPU.

That a CPU trial holds exactly one CPU and records where it ran is checked on the real CLI run of
``test_trials_kill.py`` (its evaluations' extras), not again here.
"""
from __future__ import annotations

import sqlite3

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.trials import trial_resources
from autocomp.workers.placement import cluster_gpus

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusals")


def test_trial_resources_follow_the_device_and_the_cluster(ray_session):
    assert trial_resources("cpu", 4, gpus=2) == ("cpu", {"cpu": 1})
    assert trial_resources("auto", 4, gpus=0) == ("cpu", {"cpu": 1})
    assert trial_resources("auto", 4, gpus=1) == ("cuda", {"cpu": 1, "gpu": 0.25})
    assert trial_resources("cuda", 3, gpus=1)[1]["gpu"] * 3 <= 1          # three trials fit on one GPU
    assert trial_resources("cuda", 2, gpus=8) == ("cuda", {"cpu": 1, "gpu": 1.0})   # at most one GPU each
    with pytest.raises(AutocompError, match="--device cuda: the Ray cluster reports no GPU"):
        trial_resources("cuda", 2, gpus=0)
    with pytest.raises(AutocompError, match="must be one of auto, cpu, cuda"):
        trial_resources("tpu", 2, gpus=1)
    # on the suite's own cluster: auto is the CPU here, CUDA on a machine that has GPUs
    gpus = cluster_gpus()
    dev, res = trial_resources("auto", 2)
    assert (dev, res.get("gpu", 0.0) > 0) == (("cuda", True) if gpus > 0 else ("cpu", False))


def _studies(db) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        tables = {r[0] for r in c.execute("select name from sqlite_master where type='table'")}
        return c.execute("select count(*) from autocomp_studies").fetchone()[0] if "autocomp_studies" in tables else 0


@pytest.mark.parametrize("argv, expect", [
    pytest.param(["--device", "cuda"], "--device cuda: the Ray cluster reports no GPU", marks=no_cuda),
    (["--qat", "device=cuda"], "--qat: device is not a trial option: use --device"),
    (["--qat", "steps=4,eval_dtype=bfloat16"], "--qat: eval_dtype is not a trial option: use --eval-dtype"),
    (["--eval-dtype", "float8"], "--eval-dtype must be one of float32, float16, bfloat16"),
], ids=["cuda-without-gpu", "qat-device", "qat-eval-dtype", "bad-dtype"])
def test_trials_device_refusals_are_one_line_exit_2_and_write_nothing(argv, expect, ray_session, digits, capfd,
                                                                      tmp_path, monkeypatch):
    from autocomp.cli import main

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as exc:
        main(["search", "--db", f"sqlite:///{db}", "--study", "dev", "--trials", "qat", "--top", "2", *argv])
    out, err = capfd.readouterr()
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1 and expect in errors[0], out + err
    assert "Traceback" not in out + err
    assert _studies(db) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trials_train_on_the_gpu_under_the_cpu_trials_names(ray_session, sqlite_url, digits, tmp_path, monkeypatch):
    from autocomp.store import Store
    from autocomp.trial_options import qat_options, trial_kind
    from autocomp.trials import qat_trials

    from ._trials import make_study

    monkeypatch.setenv("AUTOCOMP_TUNE_DIR", str(tmp_path / "tune"))
    store = Store(sqlite_url)
    st, ctx, pols = make_study(store, "g", digits)
    opts = qat_options({}, 30)
    res = qat_trials(store, st, ctx, 2, opts, max_concurrent=2, device="auto", eval_dtype="bfloat16")
    assert res.evaluated == 2 and not res.failures
    evals = store.list_evaluations(st, kind=trial_kind(opts))     # the CPU's name: placement names no trial
    assert {e.policy_id for e in evals} == {pols["mixed"].id, pols["w2"].id}
    for e in evals:
        assert e.extra["device"] == "cuda" and e.extra["eval_dtype"] == "bfloat16"
        assert 0 < e.extra["resources"]["GPU"] <= 1 and e.extra["resources"]["CPU"] == 1
        assert e.extra["steps"] == 30 and 0.1 < e.quality <= 1.0     # trained: well above chance (10 classes)
    again = qat_trials(store, st, ctx, 2, opts, max_concurrent=2, device="cpu")   # resumed on the CPU
    assert again.evaluated == 0 and again.done == 2
