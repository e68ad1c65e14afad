"""What names a QAT trial: ``--qat`` parsed to typed values, checked by the evaluator's own
``Options``, kept as the non-default ones (so spelling a default, or the order, names the same
trial), with ``--trial-steps`` and the search seed folded in. No Ray here."""
from __future__ import annotations

import pytest

from autocomp.errors import AutocompError
from autocomp.trial_options import parse_options, qat_fields, qat_options, trial_group, trial_kind


def test_values_are_typed():
    got = parse_options(" epochs=1, lr=2e-3 ,estimator=reste,learn_scales=true,steps=none,distill=0.5")
    assert got == {"epochs": 1, "lr": 0.002, "estimator": "reste", "learn_scales": True, "steps": None,
                   "distill": 0.5}
    assert parse_options("") == {} and parse_options(None) == {}


def test_defaults_and_order_do_not_rename_a_trial():
    d = qat_fields()
    spelled = qat_options(parse_options(f"lr={d['lr']},epochs=1"))     # lr at its default
    assert spelled == {"epochs": 1} == qat_options({"epochs": 1})
    assert trial_kind(qat_options({"epochs": 1, "seed": 3})) == trial_kind(qat_options({"seed": 3, "epochs": 1}))
    assert trial_kind({"epochs": 1}) != trial_kind({"epochs": 2}) and len(trial_kind({"epochs": 1})) <= 32
    assert trial_group({"epochs": 1}, 1) != trial_group({"epochs": 1}, 2) == trial_group({"epochs": 1}, 5)


def test_steps_and_seed_fold_in():
    assert qat_options({}, steps=5) == {"steps": 5}
    assert qat_options({"steps": 5}, steps=5) == {"steps": 5}
    assert qat_options({}, seed=4) == {"seed": 4} and qat_options({"seed": 1}, seed=4) == {"seed": 1}
    with pytest.raises(AutocompError, match="disagree"):
        qat_options({"steps": 5}, steps=6)
    with pytest.raises(AutocompError, match="has no option 'nope'"):
        qat_options({"nope": 1})
