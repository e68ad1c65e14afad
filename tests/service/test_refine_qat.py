"""QAT refinement: a straight-through fine-tune as a Ray Tune trial chosen by OptunaSearch."""
from __future__ import annotations

import optuna

from autocomp.budget import CostModel, parse_budget
from autocomp.evaluators import get_evaluator
from autocomp.policy import Choice, Policy
from autocomp.profile import model_param_count
from autocomp.refine_qat import KIND, refine_qat
from autocomp.search_spaces import load_space
from autocomp.store import Store


def test_qat_recovers_accuracy_that_ptq_loses(digits, digits_layers):
    names = [l.name for l in digits_layers]
    w2 = Policy.uniform(names, Choice(2, 8, 0.0))
    ptq = get_evaluator("ptq").evaluate(digits, w2).quality
    qat = get_evaluator("qat", epochs=1).evaluate(digits, w2)
    assert qat.policy_id == w2.id and qat.extras["epochs"] == 1
    assert qat.quality > ptq + 0.2  # 2-bit weights collapse under PTQ; one STE epoch restores most



def test_refine_qat_runs_tune_trials_seeded_by_the_front_and_resumes(ray_session, sqlite_url, digits, digits_layers):
    store = Store(sqlite_url)
    budget = parse_budget("size<=25%")
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    st, _ = store.open_study("q", {"model": "digits", "budget_text": budget.describe()})
    store.save_layers(st, digits_layers)
    store.update_config(st, fp32={m: cm.fp32(m) for m in ("size", "bitops", "avg_bits")}, front_costs=budget.metrics)
    names = [l.name for l in digits_layers]
    seed = Policy.from_choices([(n, Choice(8 if i == 0 else 4, 8, 0.0)) for i, n in enumerate(names)])
    store.save_policy(st, seed, "ilp", "seed", cm.costs(seed))
    store.save_evaluation(st, get_evaluator("ptq").evaluate(digits, seed).with_costs(cm.costs(seed)))
    ctx = dict(spec="digits", layers=digits_layers, space=load_space("mixed_precision"), budget=budget, cm=cm,
               seed=0, epochs=1)
    res = refine_qat(store, st, n=1, **ctx)
    assert res.evaluated == 1 and res.done == 1 and not res.failures
    qat = store.list_evaluations(st, kind=KIND)
    assert [e.policy_id for e in qat] == [seed.id]            # the PTQ front is tried first
    assert 0.0 < qat[0].quality <= 1.0 and qat[0].size == cm.cost("size", seed)
    assert qat[0].quality_metric == "accuracy" and qat[0].extra["epochs"] == 1
    ostudy = optuna.load_study(study_name="q:qat", storage=sqlite_url)
    complete = ostudy.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 1 and complete[0].values[0] == qat[0].quality
    again = refine_qat(store, st, n=1, **ctx)                 # resumed: nothing left to run
    assert again.evaluated == 0 and again.done == 1
    assert len(optuna.load_study(study_name="q:qat", storage=sqlite_url).trials) == len(ostudy.trials)
