"""A QAT trial that raises (a real workload whose factory fails only inside a Ray worker while a
flag file exists) is retried by Tune, then recorded failed with its reason; the run ends
``incomplete`` with the other trials stored, and the same run again retries only that trial."""
from __future__ import annotations

import pytest

from autocomp.stages import IncompleteRun, tracked
from autocomp.stages.trials import TrialsSpec, run_trials
from autocomp.store import Store
from autocomp.trial_options import qat_options, trial_group, trial_kind
from autocomp.trials import RECORD

from ._trials import make_study

FACTORY = '''
from pathlib import Path

FLAG = Path(__file__).with_name("fail-in-trials")


def make():
    import ray

    from autocomp.workload import load_workload

    if FLAG.exists() and ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        with FLAG.open("a") as f:      # one line per attempt
            f.write("raised\\n")
        raise RuntimeError("no data on this worker")
    return load_workload("digits")
'''
RESUME = "autocomp search --study f --trials qat --top 1 --qat epochs=1"


def test_a_failing_trial_is_retried_then_recorded_failed_and_retried_by_the_next_run(ray_session, tmp_path, digits):
    (tmp_path / "flaky.py").write_text(FACTORY)
    flag = tmp_path / "fail-in-trials"
    flag.write_text("")
    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    st, ctx, pols = make_study(store, "f", digits, spec=f"{tmp_path / 'flaky.py'}:make")
    spec = TrialsSpec("qat", top=1, qat="epochs=1", retries=1)
    opts = qat_options({"epochs": 1})

    with pytest.raises(IncompleteRun, match="1 QAT trial.s. failed after 2 attempt.s. .policy "
                                            f"{pols['mixed'].id}: .*no data on this worker"):
        with tracked(store, st, resume=RESUME):
            run_trials(store, st, ctx, spec, workers=1)
    assert flag.read_text().splitlines() == ["raised", "raised"]       # the first attempt and one retry
    got = store.get_study("f")
    assert got.status == "incomplete" and "no data on this worker" in got.config["status_reason"]
    assert RESUME in got.config["resume_command"]
    failed = store.load_record(st, RECORD + trial_group(opts, 1))["failed"]
    assert [f["policy_id"] for f in failed] == [pols["mixed"].id] and "no data on this worker" in failed[0]["reason"]
    assert failed[0]["options"] == {"epochs": 1}
    assert not store.evaluated_ids(st, kind=trial_kind(opts))

    flag.unlink()                                                       # the worker's data is back
    with tracked(store, st, resume=RESUME):
        res = run_trials(store, st, ctx, spec, workers=1)
    assert res.evaluated == 1 and res.done == 1 and not res.failures
    assert store.get_study("f").status == "done"
    assert store.evaluated_ids(st, kind=trial_kind(opts)) == {pols["mixed"].id}
    assert store.load_record(st, RECORD + trial_group(opts, 1))["failed"] == []
