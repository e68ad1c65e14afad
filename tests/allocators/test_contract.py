"""The allocator contract (:mod:`autocomp.testing.allocators`) on ``ilp`` (HiGHS and CBC), ``dp``
and a user's allocator registered here; then what only the built-ins promise (agreeing with each
other on the digits profile, dominance removal, time limits)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from autocomp.allocators import Allocator, RawSolution, get_allocator, list_allocators, register
from autocomp.allocators import _base
from autocomp.budget import Budget, Constraint, CostModel
from autocomp.errors import AutocompError
from autocomp.policy import Choice
from autocomp.search_spaces import space_from_dict
from autocomp.sensitivity import Sensitivity
from autocomp.testing import AllocatorContract
from autocomp.testing.allocators import cost_range, layer_table


class TestILPHighs(AllocatorContract):
    allocator = "ilp"
    options = {"solver": "highs"}


class TestILPCBC(AllocatorContract):
    """CBC runs as a subprocess (~0.1 s a solve), so fewer and smaller instances."""

    allocator = "ilp"
    options = {"solver": "cbc"}
    examples = 8
    max_layers = 3


class TestDP(AllocatorContract):
    allocator = "dp"
    examples = 120


class Exhaustive(Allocator):
    """A user's allocator: every combination of choices (a handful of layers at most)."""

    name = "exhaustive"

    def _solve_points(self, prob, limits):
        out = []
        for lim in limits:
            fits = [p for p in itertools.product(*(range(len(c)) for c in prob.choices))
                    if all(sum(c[k] for c, k in zip(prob.costs[m], p)) <= b * (1 + 1e-9) for m, b in lim.items())]
            out.append(RawSolution(min(fits, key=prob.objective), True) if fits else None)
        return out


class TestUserAllocator(AllocatorContract):
    """An allocator registered from outside autocomp runs the same suite."""

    allocator = "exhaustive"
    examples = 30

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _registered(cls):
        with pytest.MonkeyPatch.context() as mp:      # registered for this class only
            mp.setattr(_base, "_REGISTRY", _base._REGISTRY.copy())
            register("exhaustive", Exhaustive)
            yield


def test_registry_lists_both():
    assert {"ilp", "dp"} <= set(list_allocators())
    with pytest.raises(AutocompError, match="unknown allocator 'nope'"):
        get_allocator("nope")


def _digits_instance(digits_layers, space_spec, seed=0):
    """Real layer profile of the digits CNN, HAWQ-shaped omegas (layer factor x perturbation)."""
    rng = np.random.default_rng(seed)
    space = space_from_dict(space_spec)
    omega = {}
    for l in digits_layers:
        s = rng.lognormal(0, 1)
        omega[l.name] = {c.key: float(s * (4.0 ** (-(0.6 if c.w_bits == 1.58 else c.w_bits)) + 0.02 * c.prune ** 2))
                         for c in space.choices_for(l, len(digits_layers))}
    return space, Sensitivity("hawq_shaped", omega), CostModel(digits_layers)


@pytest.mark.parametrize("budget_frac", [0.06, 0.1, 0.2])
def test_dp_and_ilp_agree_on_digits(digits_layers, budget_frac):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 3, 4, 6, 8], "prune": [0.0, 0.25, 0.5, 0.75],
                                                       "overrides": [{"match": "@first", "w_bits": [8], "prune": [0.0]}]})
    budget = Budget((Constraint("size", budget_frac, True, f"size<={budget_frac:.0%}"),))
    a_ilp = get_allocator("ilp", solver="cbc").solve(digits_layers, sens, space, budget.resolve(cm), cm)
    a_dp = get_allocator("dp").solve(digits_layers, sens, space, budget.resolve(cm), cm)
    assert a_dp.proven_optimal and a_ilp.proven_optimal
    assert a_dp.objective == pytest.approx(a_ilp.objective, rel=1e-7, abs=1e-12)
    assert a_dp.policy[digits_layers[0].name].w_bits == 8


def test_sweeps_agree_and_cover_joint_policies(digits_layers):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 4, 8], "prune": [0.0, 0.5, 0.75]})
    budget = Budget((Constraint("size", 0.25, True, "size<=25%"),))
    s_ilp = get_allocator("ilp", solver="highs").sweep(digits_layers, sens, space, budget.resolve(cm), cm, points=8)
    s_dp = get_allocator("dp").sweep(digits_layers, sens, space, budget.resolve(cm), cm, points=8)
    assert [a.objective for a in s_dp] == pytest.approx([a.objective for a in s_ilp], rel=1e-7, abs=1e-12)
    assert any(c.prune > 0 for a in s_dp for _, c in a.policy.layers)  # joint policies come out
    assert all(cm.satisfies(a.policy, budget) for a in s_dp)


def test_dp_refuses_several_constraints_and_names_the_ilp(digits_layers):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 4, 8]})
    budget = Budget((Constraint("size", 0.2, True), Constraint("bitops", 0.2, True)))
    with pytest.raises(AutocompError, match="use --allocator ilp"):
        get_allocator("dp").solve(digits_layers, sens, space, budget.resolve(cm), cm)
    get_allocator("ilp").check_constraints(budget.metrics)


def test_time_limited_solve_never_claims_optimal():
    """A solve stopped by its time limit is reported as not proven optimal (PuLP #649/#711),
    and what it returns still meets the budget."""
    from autocomp.allocators.synthetic import instance

    layers, sens, space, cm, budget = instance(120, seed=1)
    alloc = get_allocator("ilp", solver="highs", time_limit=1e-3, warm_start=False)
    a = alloc.solve(layers, sens, space, budget.resolve(cm), cm)
    assert not a.proven_optimal and a.status == "feasible (not proven optimal)"
    assert cm.satisfies(a.policy, budget, tol=1e-6)


def test_dominated_choices_removed_without_changing_the_optimum(digits_layers):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 3, 4, 6, 8], "prune": [0.0, 0.5]})
    budget = Budget((Constraint("size", 0.12, True, "size<=12%"),))
    full = get_allocator("dp", remove_dominated=False).solve(digits_layers, sens, space, budget.resolve(cm), cm)
    fast = get_allocator("dp").solve(digits_layers, sens, space, budget.resolve(cm), cm)
    assert fast.objective == pytest.approx(full.objective, rel=1e-12)
    from autocomp.allocators._problem import build_problem

    prob = build_problem(digits_layers, sens.omega, space.choices(digits_layers), [], ["size"], cm)
    assert prob.removed > 0  # e.g. w4 pruned 50 % costs what w2 does, and is scored worse or better


def test_dp_at_the_minimum_cost_up_to_rounding():
    """A limit equal to the smallest achievable cost, summed in another order (one ulp below the
    DP's own sum), is met by the cheapest policy: the LP bound once wrapped round to the most
    expensive end of the hull there and pruned every solution."""
    layers = layer_table([1, 237, 1, 83], [1, 1, 1, 1])
    space = space_from_dict({"w_bits": [1, 1.58, 2], "a_bits": [4], "prune": [0.0, 0.5]})
    omega = {l.name: {c.key: 0.0 for c in space.choices_for(l, 4)} for l in layers}
    omega["l3"]["w1a4p0.5"] = 0.5
    cm = CostModel(layers)
    lo, _ = cost_range(layers, space, cm, "avg_bits")
    limits = Budget((Constraint("avg_bits", lo, False, "avg_bits<=min"),)).resolve(cm)
    a = get_allocator("dp").solve(layers, Sensitivity("t", omega), space, limits, cm)
    assert a.objective == 0.5 and a.policy["l3"] == Choice(1, 4, 0.5)
    assert [s.objective for s in get_allocator("dp").sweep(layers, Sensitivity("t", omega), space, limits, cm,
                                                            points=3)] == [0.5]
