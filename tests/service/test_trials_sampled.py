"""``--trials-per-policy M`` > 1: Optuna (in the study database, under Ray Tune) samples each
trial's estimator, its hyper-parameters and the learning rate; each policy gets exactly M trials,
each its own stored evaluation; a re-run samples nothing more."""
from __future__ import annotations

import optuna

from autocomp.store import Store
from autocomp.trial_options import qat_options, trial_group
from autocomp.trials import ESTIMATOR_PARAMS, LR_RANGE, TrialSpace, qat_trials

from ._trials import make_study


def test_the_space_samples_what_the_options_leave_open():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for fixed in ({}, {"estimator": "reste"}, {"estimator": "biper", "lr": 0.01, "biper_freq": 2.0}):
        t = study.ask()
        TrialSpace(["p1", "p2"], fixed)(t)
        est = fixed.get("estimator", t.params.get("estimator"))
        assert t.params["policy"] in ("p1", "p2") and ("estimator" in t.params) == ("estimator" not in fixed)
        assert ("lr" in t.params) == ("lr" not in fixed)
        assert "lr" not in t.params or LR_RANGE[0] <= t.params["lr"] <= LR_RANGE[1]
        hyper = set(ESTIMATOR_PARAMS.get(est, {})) - set(fixed)
        assert hyper <= set(t.params) and not set(t.params) - {"policy", "lr", "estimator", *hyper}


def test_m_trials_per_policy_sampled_by_optuna_and_resumed(ray_session, sqlite_url, digits):
    store = Store(sqlite_url)
    st, ctx, pols = make_study(store, "m", digits)
    opts = qat_options({"epochs": 1})
    res = qat_trials(store, st, ctx, 1, opts, per_policy=2, seed=1, max_concurrent=2)
    assert res.evaluated == 2 and res.done == 2 and not res.failures
    group = trial_group(opts, 2)
    rows = [e for e in store.list_evaluations(st, kind=None) if e.extra.get("trial_group") == group]
    assert [e.policy_id for e in rows] == [pols["mixed"].id] * 2 and len({e.kind for e in rows}) == 2
    ostudy = optuna.load_study(study_name=res.optuna_study, storage=sqlite_url)
    done = ostudy.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert {t.params["policy"] for t in done} == {pols["mixed"].id} and len(done) == 2
    by_lr = {e.extra["qat_options"]["lr"]: e for e in rows}
    for t in done:                                   # each stored evaluation is its Optuna trial's
        e = by_lr[t.params["lr"]]
        assert t.values[0] == e.quality and e.extra["qat_options"]["epochs"] == 1
        assert e.extra["qat_options"].get("estimator", "ste") == t.params.get("estimator", "ste")
    again = qat_trials(store, st, ctx, 1, opts, per_policy=2, seed=1, max_concurrent=2)
    assert again.evaluated == 0 and again.done == 2
    assert len(optuna.load_study(study_name=res.optuna_study, storage=sqlite_url).trials) == len(ostudy.trials)
