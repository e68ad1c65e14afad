"""The cost-metric registry: built-in metrics keep their contract, and a metric a user registers
can be budgeted on end to end (parse -> resolve -> allocator solve, verified, infeasible named)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from autocomp import costs
from autocomp.allocators import get_allocator
from autocomp.budget import CostModel, parse_budget
from autocomp.costs import CostMetric, cost_metric_names, get_cost_metric, register_cost_metric
from autocomp.errors import AutocompError, BudgetError, InfeasibleBudget
from autocomp.policy import FLOAT_CHOICE, Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.search_spaces import space_from_dict
from autocomp.sensitivity import Sensitivity

LAYERS = [LayerInfo("a", "Linear", (10, 20), 200, 10, 200, (20,), (10,), 0),
          LayerInfo("b", "Conv2d", (4, 2, 3, 3), 72, 0, 72 * 16, (2, 4, 4), (4, 4, 4), 1),
          LayerInfo("c", "Linear", (5, 40), 200, 5, 200, (40,), (5,), 2)]
SPACE = {"w_bits": [2, 4, 8], "a_bits": [8], "prune": [0.0, 0.5]}


class Params(CostMetric):
    """A toy metric: weights kept after pruning (any bits), counted in K/M."""

    name = "params"
    units = {"": 1.0, "k": 1e3, "m": 1e6}
    unit_help = "%, or a count with K/M"

    def layer_costs(self, layer, choices, ctx):
        return layer.params * (1.0 - np.array([c.prune for c in choices]))

    def offset(self, ctx):
        return float(ctx.other_params)  # biases are never pruned

    def format(self, value):
        return f"{value:.0f} params"


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test whatever it registered."""
    monkeypatch.setattr(costs, "_COSTS", costs._COSTS.copy())
    return costs


def test_built_ins_are_registered_in_column_order():
    assert cost_metric_names()[:4] == ["size", "bitops", "avg_bits", "latency"]
    assert CostModel(LAYERS).metrics == ["size", "bitops", "avg_bits"]
    table = {l.name: {"w8a8": 1e-3} for l in LAYERS}
    assert CostModel(LAYERS, latency_table=table).metrics == ["size", "bitops", "avg_bits", "latency"]
    with pytest.raises(AutocompError, match="unknown cost metric 'speed'"):
        get_cost_metric("speed")


@pytest.mark.parametrize("name", ["size", "bitops", "avg_bits", "latency"])
def test_vectorised_costs_agree_with_the_scalar_ones(name):
    space = space_from_dict(SPACE)
    table = {l.name: {c.key: 1e-4 * (i + 1) * c.w_bits for i, c in enumerate(space.choices_for(l, 3))}
             for l in LAYERS}
    for l in LAYERS:
        table[l.name][FLOAT_CHOICE.key] = 5e-3
    cm = CostModel(LAYERS, latency_table=table)
    m = get_cost_metric(name)
    for l in LAYERS:
        cs = space.choices_for(l, len(LAYERS))
        assert np.allclose(m.layer_costs(l, cs, cm.ctx), [m.layer_cost(l, c, cm.ctx) for c in cs], rtol=1e-15)
    assert cm.fp32(name) == m.offset(cm.ctx) + sum(m.layer_cost(l, FLOAT_CHOICE, cm.ctx) for l in LAYERS)
    assert cm.fp32(name) > 0 and isinstance(m.format(cm.fp32(name)), str)


@pytest.mark.parametrize("name, value, text", [("size", 60216.0, "60.22KB"), ("size", 1.5e6, "1.500MB"),
                                               ("bitops", 37789696.0, "0.03779G"), ("avg_bits", 3.98, "3.980"),
                                               ("latency", 0.0123, "12.3ms")])
def test_built_in_formats(name, value, text):
    assert get_cost_metric(name).format(value) == text


def test_messages_give_the_share_of_fp32_except_for_bits():
    cm = CostModel(LAYERS)
    assert cm.describe("size", cm.fp32("size") / 4) == f"{cm.format('size', cm.fp32('size') / 4)} (25.0% of fp32)"
    assert cm.describe("avg_bits", 4.0) == "4.000"


def test_a_registered_metric_is_budgeted_end_to_end(registry):
    with pytest.raises(BudgetError, match="unknown budget metric 'params'"):
        parse_budget("params<=300")
    register_cost_metric(Params())
    assert parse_budget("params<=0.3K").constraints[0].value == 300.0
    with pytest.raises(BudgetError, match="params takes %, or a count with K/M"):
        parse_budget("params<=3MB")
    cm = CostModel(LAYERS)
    assert cm.fp32("params") == 200 + 72 + 200 + 15
    assert "params" not in cm.metrics  # not reported unless the metric says so
    space = space_from_dict(SPACE)
    rng = np.random.default_rng(0)
    omega = {l.name: {c.key: float(rng.uniform()) for c in space.choices_for(l, 3)} for l in LAYERS}
    budget = parse_budget("params<=75%,size<=40%")
    limits = budget.resolve(cm)
    assert limits["params"] == 0.75 * cm.fp32("params")
    best = _brute_force(space, omega, cm, limits)
    for name, opts in (("ilp", {"solver": "highs"}), ("ilp", {"solver": "cbc"})):
        a = get_allocator(name, **opts).solve(LAYERS, Sensitivity("toy", omega), space, limits, cm)
        assert a.objective == pytest.approx(best, abs=1e-12)
        assert a.costs["params"] == cm.cost("params", a.policy) <= limits["params"]
        assert a.budget == budget
    dp = get_allocator("dp")
    single = parse_budget("params<=75%").resolve(cm)
    sweep = dp.sweep(LAYERS, Sensitivity("toy", omega), space, single, cm, points=4)
    assert sweep[0].limits.primary.text.endswith(" params")   # the sweep's bounds use its format
    assert all(cm.satisfies(s.policy, s.limits, tol=1e-9) for s in sweep)
    with pytest.raises(InfeasibleBudget, match=r"params<=10% is below the smallest achievable params=251 params"):
        dp.solve(LAYERS, Sensitivity("toy", omega), space, parse_budget("params<=10%").resolve(cm), cm)


def _brute_force(space, omega, cm, limits) -> float:
    best = None
    ch = space.choices(LAYERS)
    for combo in itertools.product(*(ch[l.name] for l in LAYERS)):
        pol = Policy.from_choices(list(zip((l.name for l in LAYERS), combo)))
        if not cm.violations(pol, limits):
            obj = sum(omega[n][c.key] for n, c in pol.layers)
            best = obj if best is None else min(best, obj)
    assert best is not None
    return best


def test_metric_names_must_parse_in_a_budget(registry):
    bad = type("Bad", (Params,), {"name": "Kept-Weights"})
    with pytest.raises(AutocompError, match="lower-case name"):
        register_cost_metric(bad())


def test_a_reported_metric_is_stored_for_every_policy(registry):
    register_cost_metric(type("Reported", (Params,), {"reported": True})())
    cm = CostModel(LAYERS)
    assert cm.metrics == ["size", "bitops", "avg_bits", "params"]
    assert cm.costs(Policy.uniform([l.name for l in LAYERS], Choice(4, 8, 0.5)))["params"] == 236 + 15


@pytest.mark.parametrize("name,up,lo,hi", [("accuracy", True, 0.0, 1.0), ("cosine", True, -1.0, 1.0),
                                           ("perplexity", False, 1.0, None), ("loss", False, 0.0, None)])
def test_quality_metrics_have_a_direction_and_bounds(name, up, lo, hi):
    from autocomp.metrics import get_quality_metric

    m = get_quality_metric(name)
    assert m.higher_is_better is up and m.bounds == (lo, hi)
    assert m.direction == ("maximize" if up else "minimize")
    best, worse = (0.9, 0.5) if up else (5.0, 9.0)
    assert m.better(best, worse) and not m.better(worse, best) and sorted([worse, best], key=m.key)[0] == best
