"""Resuming a study on other data or weights of the same model is refused, the study unchanged.

The workload is a user file (an absolute ``--model`` path: the suite's Ray workers run
elsewhere) whose evaluation images, labels or weights follow an environment
variable, so one ``--model`` string names different workloads. The first search stores the
workload's digest; a resume with the same workload goes on (exit 0); one with another evaluation
split, other labels or retrained weights of the same shapes is one ``error:`` line, exit 2, and
not a byte of the database changes. A workload whose only floating-point targets differ in their
last bits (an encoder's fp32 outputs on another machine) resumes.
"""
from __future__ import annotations

import pytest

from autocomp.stages.profile import workload_digest
from autocomp.workload import Workload

from .test_trials_options import _rows

WORKLOAD = '''
import os

import torch

from autocomp.workloads.digits import digits


def make():
    wl = digits()
    change = os.environ.get("AC_CHANGE", "")
    if change == "eval":            # another evaluation split: its first image dropped
        wl.eval = [(wl.eval[0][0][1:], wl.eval[0][1][1:])] + list(wl.eval[1:])
    if change == "labels":          # the same images, one label changed
        x, y = wl.eval[0]
        y = y.clone()
        y[0] = (y[0] + 1) % 10
        wl.eval = [(x, y)] + list(wl.eval[1:])
    if change == "weights":         # retrained: same shapes, other values
        base = wl.model_factory

        def factory():
            m = base()
            with torch.no_grad():
                m.classifier[-1].weight.mul_(1.01)
            return m
        wl.model_factory = factory
    return wl
'''


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session):
    """A study of the user's workload (one budget point) and its database file."""
    from autocomp.cli import main

    folder = tmp_path_factory.mktemp("changed")
    (folder / "wl.py").write_text(WORKLOAD)
    db = folder / "study.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv("AC_CHANGE", raising=False)
        with pytest.raises(SystemExit) as exc:
            main(["search", "--model", f"{folder}/wl.py:make", "--study", "s", "--db", str(db), "--budget", "size<=25%",
                  "--points", "1", "--workers", "1", "--proxy", "quant_mse"])
        assert exc.value.code in (0, None)
    return folder, db


def _resume(folder, db, monkeypatch, change: str | None):
    from autocomp.cli import main

    monkeypatch.chdir(folder)
    if change:
        monkeypatch.setenv("AC_CHANGE", change)
    else:
        monkeypatch.delenv("AC_CHANGE", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["search", "--model", f"{folder}/wl.py:make", "--study", "s", "--db", str(db), "--budget", "size<=25%",
              "--points", "1", "--workers", "1", "--proxy", "quant_mse"])
    return exc.value.code


@pytest.mark.parametrize("change", ["eval", "labels", "weights"])
def test_resume_on_other_data_or_weights_is_refused(study, change, capfd, monkeypatch):
    folder, db = study
    before, raw = _rows(db), db.read_bytes()
    code = _resume(folder, db, monkeypatch, change)
    out, err = capfd.readouterr()
    errors = [l for l in (out + err).splitlines() if l.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out + err, out + err
    assert f"was evaluated on other weights or data of '{folder}/wl.py:make'" in errors[0], errors[0]
    assert _rows(db) == before and db.read_bytes() == raw


def test_resume_on_the_same_workload_goes_on(study, capfd, monkeypatch):
    folder, db = study
    code = _resume(folder, db, monkeypatch, None)
    out, err = capfd.readouterr()
    assert code in (0, None), out + err
    assert not [l for l in (out + err).splitlines() if l.startswith("error:")]


def test_float_targets_count_by_shape_only():
    import torch

    x = torch.arange(6.0).reshape(3, 2)
    ref = torch.randn(3, 4)
    model = torch.nn.Linear(2, 4)
    a = Workload("enc", lambda: model, calib=[(x, ref)], eval=[(x, ref)])
    b = Workload("enc", lambda: model, calib=[(x, ref)], eval=[(x, ref + 1e-7)])   # last bits differ
    c = Workload("enc", lambda: model, calib=[(x, ref)], eval=[(x + 1, ref)])      # other inputs
    d = Workload("enc", lambda: model, calib=[(x, ref)], eval=[(x, ref[:2])])      # other shape
    assert workload_digest(a, model) == workload_digest(b, model)
    assert workload_digest(a, model) != workload_digest(c, model)
    assert workload_digest(a, model) != workload_digest(d, model)
