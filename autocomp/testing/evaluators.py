"""The evaluator contract: ``evaluate(workload, policy) -> Metrics`` of that policy, in the
workload's quality metric, reproducible, rebuilt from plain options, set up once per workload.

Run it on an evaluator of your own::

    from autocomp.testing import EvaluatorContract

    class TestMine(EvaluatorContract):
        evaluator = "mine"                          # a registered name or "pkg.module:Class"
        options = {"epochs": 1}                     # what to build it with
        bad_options = [({"epochs": -1}, "epochs")]  # (options, part of the one-line error)

The suite evaluates on the ``digits`` workload (``workload_spec``) twice over: as shipped
(accuracy, higher is better) and re-labelled with a lower-is-better quality (the workload's mean
loss, ``quality="loss"``), so an evaluator that assumes "higher is better" or ignores
``workload.quality`` fails it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any, Callable, ClassVar

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.evaluators import get_evaluator, list_evaluators
from autocomp.metrics import Metrics, get_quality_metric
from autocomp.modules import call_model
from autocomp.policy import Choice, Policy
from autocomp.testing import _data


def mean_loss(model: torch.nn.Module, batches, loss: Callable) -> float:
    """Mean per-sample ``loss`` over ``batches``: a lower-is-better quality."""
    total = n = 0.0
    with torch.no_grad():
        for x, y in batches:
            total += float(loss(call_model(model, x), y)) * int(y.shape[0])
            n += int(y.shape[0])
    return total / max(n, 1.0)


class EvaluatorContract:
    """What any registered evaluator guarantees. Subclasses set the class attributes below."""

    evaluator: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    bad_options: ClassVar[list[tuple[dict[str, Any], str]]] = []
    workload_spec: ClassVar[str] = "digits"     # a --model spec
    exact_at_fp32: ClassVar[bool] = True        # the fp32 policy scores exactly as the float model
    harsh: ClassVar[Choice] = Choice(2, 8, 0.0)   # a uniform choice that costs quality on the workload

    @pytest.fixture(scope="class", params=["accuracy", "loss"])
    @classmethod
    def workload(cls, request):
        wl = _data.workload(cls.workload_spec)
        if request.param == "accuracy":
            return wl
        return dataclasses.replace(wl, quality="loss", metric=functools.partial(mean_loss, loss=wl.loss))

    @pytest.fixture(scope="class")
    @classmethod
    def ev(cls):
        return get_evaluator(cls.evaluator, **cls.options)

    @pytest.fixture(scope="class")
    @classmethod
    def names(cls):
        return [l.name for l in _data.layers(cls.workload_spec)]

    @pytest.fixture(scope="class")
    @classmethod
    def scored(cls, ev, workload, names):
        """fp32, harsh and mixed policies, each evaluated once per workload."""
        mixed = Policy.from_choices([(n, Choice(8 if i in (0, len(names) - 1) else 4, 8, 0.0))
                                     for i, n in enumerate(names)])
        pols = {"fp32": Policy.uniform(names, Choice(32, 32, 0.0)), "harsh": Policy.uniform(names, cls.harsh),
                "mixed": mixed}
        return {k: (p, ev.evaluate(workload, p)) for k, p in pols.items()}

    def test_registered_and_rebuilt_from_its_options(self, ev):
        if ":" not in self.evaluator:
            assert self.evaluator in list_evaluators()
        # What the pool ships to each actor: plain options that build the same evaluator there.
        again = get_evaluator(self.evaluator, **json.loads(json.dumps(ev.options_dict())))
        assert again.options == ev.options and type(again) is type(ev)

    def test_returns_the_policy_s_metrics(self, scored, workload):
        for pol, m in scored.values():
            assert isinstance(m, Metrics)
            assert m.policy_id == pol.id
            assert math.isfinite(m.quality)
            assert m.quality_metric == workload.quality
            assert m.seconds is None or m.seconds >= 0
            d = json.loads(json.dumps(m.to_dict()))          # crosses a process boundary as JSON-able
            assert Metrics.from_dict(d) == m

    def test_fp32_reproduces_the_float_model(self, scored, workload):
        if not self.exact_at_fp32:
            pytest.skip(f"{self.evaluator} changes the float model (e.g. fine-tunes it)")
        assert scored["fp32"][1].quality == pytest.approx(workload.evaluate(workload.model()), rel=1e-9, abs=1e-12)

    def test_a_harsher_policy_is_not_better_than_fp32(self, scored, workload):
        qm = get_quality_metric(workload.quality)
        fp32, harsh = scored["fp32"][1].quality, scored["harsh"][1].quality
        assert qm.no_worse(fp32, harsh), (fp32, harsh)

    def test_the_same_policy_scores_the_same(self, ev, scored, workload):
        pol, m = scored["mixed"]
        assert ev.evaluate(workload, pol).quality == m.quality

    def test_setup_runs_once_per_workload(self, workload, names):
        ev = get_evaluator(self.evaluator, **self.options)
        calls = []
        real = ev.setup
        ev.setup = lambda wl: (calls.append(wl), real(wl))[1]
        ev.prepare(workload)
        ev.prepare(workload)
        ev.evaluate(workload, Policy.uniform(names, Choice(8, 8, 0.0)))
        assert calls == [workload]

    def test_bad_options_are_one_line_errors(self):
        for options, match in [({"no_such_option": 1}, "has no option 'no_such_option'"), *self.bad_options]:
            with pytest.raises(AutocompError, match=match) as e:
                get_evaluator(self.evaluator, **options)
            assert "\n" not in str(e.value)
