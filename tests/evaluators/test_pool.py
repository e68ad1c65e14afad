"""``EvaluatorPool`` on the suite's real local Ray: it hosts any evaluator, a user's own included,
on warm actors that set up once; results come back as ``Metrics``; errors go to ``on_error``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from autocomp.errors import AutocompError
from autocomp.evaluators import get_evaluator
from autocomp.metrics import Metrics
from autocomp.policy import Choice, Policy
from autocomp.workers.pool import EvaluatorPool

TOY = f"{Path(__file__).with_name('_toy.py')}:WeightOnly"


def _policies(names):
    return [Policy.from_choices([(n, Choice(8 if i == 0 else b, 8, p)) for i, n in enumerate(names)])
            for b, p in ((4, 0.0), (3, 0.0), (6, 0.0), (4, 0.5))]


def test_the_pool_hosts_a_user_evaluator_on_warm_actors(ray_session, digits, digits_layers):
    pols = _policies([l.name for l in digits_layers])
    pruned = pols[-1]
    results: dict[str, Metrics] = {}
    errors: dict[str, str] = {}
    with EvaluatorPool("digits", evaluator=TOY, options={"fail_on_prune": True}, workers=2) as pool:
        pool.map(pols, on_result=lambda m: results.__setitem__(m.policy_id, m),
                 on_error=lambda pid, e: errors.__setitem__(pid, str(e)))
        first = {m.extras["pid"] for m in results.values()}
        pool.map(pols[:2], on_result=lambda m: results.__setitem__(m.policy_id, m))
        again = {results[p.id].extras["pid"] for p in pols[:2]}
    assert set(results) == {p.id for p in pols[:-1]}
    assert list(errors) == [pruned.id] and "prunes" in errors[pruned.id]     # raised: reported, not retried
    here = get_evaluator(TOY)
    for p in pols[:-1]:
        m = results[p.id]
        assert isinstance(m, Metrics) and m.quality_metric == "accuracy"
        assert m.quality == here.evaluate(digits, p).quality                  # the same code as in process
        assert m.extras["setups"] == 1 and m.extras["node"]                   # set up once per actor; placed
    assert len(first) == 2 and os.getpid() not in first
    assert again <= first                                                     # the second batch reused them


def test_ptq_on_the_pool_matches_ptq_in_process(ray_session, digits, digits_layers):
    pols = _policies([l.name for l in digits_layers])[:2]
    got: list[Metrics] = []
    with EvaluatorPool("digits", "ptq", workers=1) as pool:
        pool.map(pols, got.append)
    ptq = get_evaluator("ptq")
    assert {m.policy_id: m.quality for m in got} == {p.id: ptq.evaluate(digits, p).quality for p in pols}


def test_bad_evaluators_fail_before_any_actor_starts():
    # No Ray here: the error comes from the constructor's check, in one line.
    for evaluator, options, match in [("nope", None, "unknown evaluator 'nope'"),
                                      ("qat", {"epochs": -1}, "epochs must be"),
                                      ("ptq", {"colour": 1}, "has no option 'colour'")]:
        with pytest.raises(AutocompError, match=match):
            EvaluatorPool("digits", evaluator, options=options, workers=1)
