"""The contract every allocator keeps: optimal against brute force on small random instances,
constraints never violated, infeasible budgets detected with the minimum achievable cost, tied
layers sharing one choice. Shared by ``ilp`` and ``dp`` (DP: single-constraint budgets)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from autocomp.allocators import get_allocator, list_allocators
from autocomp.budget import Budget, Constraint, CostModel
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.profile import LayerInfo
from autocomp.proxies._base import Sensitivity
from autocomp.search_spaces import space_from_dict

# (name, options): the ILP on both of its solvers, and the DP.
ALLOCATORS = [("ilp", {"solver": "highs"}), ("ilp", {"solver": "cbc"}), ("dp", {})]
ALLOC_IDS = ["ilp-highs", "ilp-cbc", "dp"]
HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _layers(params: list[int], spatial: list[int]) -> list[LayerInfo]:
    return [LayerInfo(f"l{i}", "Linear", (p, 1), p, 0, p * s, (1,), (p,), i)
            for i, (p, s) in enumerate(zip(params, spatial))]


@st.composite
def instances(draw, max_layers: int = 4, two_constraints: bool = False):
    n = draw(st.integers(1, max_layers))
    params = draw(st.lists(st.integers(1, 2000), min_size=n, max_size=n))
    spatial = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    w_bits = draw(st.lists(st.sampled_from([1, 1.58, 2, 3, 4, 8]), min_size=1, max_size=3, unique=True))
    a_bits = draw(st.lists(st.sampled_from([4, 8]), min_size=1, max_size=2, unique=True))
    prune = draw(st.lists(st.sampled_from([0.0, 0.5]), min_size=1, max_size=2, unique=True))
    spec = {"name": "random", "w_bits": w_bits, "a_bits": a_bits, "prune": prune}
    if n > 1 and draw(st.booleans()):
        spec["overrides"] = [{"match": "@first", "w_bits": [8]}]
    if n > 2 and draw(st.booleans()):
        spec["ties"] = [["l1", "l2"]]
    space = space_from_dict(spec)
    layers = _layers(params, spatial)
    # Omegas drawn from a small grid so that exact ties between choices happen often.
    omega = {l.name: {c.key: draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 7.25]))
                      for c in space.choices_for(l, n)} for l in layers}
    cm = CostModel(layers)
    metrics = ["size", "bitops"] if two_constraints else [draw(st.sampled_from(["size", "bitops", "avg_bits"]))]
    cons = []
    for m in metrics:
        lo, hi = _brute_range(layers, space, cm, m)
        frac = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.8, 1.0]))
        cons.append(Constraint(m, lo + frac * (hi - lo), False, f"{m}<=x"))
    return layers, Sensitivity("random", omega), space, cm, Budget(tuple(cons))


def _brute_range(layers, space, cm, metric):
    ch = space.choices(layers)
    lo = cm.offset(metric) + sum(min(cm.layer_cost(metric, l, c) for c in ch[l.name]) for l in layers)
    hi = cm.offset(metric) + sum(max(cm.layer_cost(metric, l, c) for c in ch[l.name]) for l in layers)
    return lo, hi


def brute_force(layers, sens, space, cm, budget, tol: float):
    """Minimum omega over every tie-respecting policy within ``tol`` of each limit (None: none)."""
    ch = space.choices(layers)
    ties = space.tie_groups(layers)
    best = None
    for combo in itertools.product(*(ch[l.name] for l in layers)):
        pol = dict(zip((l.name for l in layers), combo))
        if any(len({pol[n] for n in g}) > 1 for g in ties):
            continue
        ok = all(cm.offset(c.metric) + sum(cm.layer_cost(c.metric, l, pol[l.name]) for l in layers)
                 <= c.limit(cm) * (1 + tol) + tol for c in budget.constraints)
        if ok:
            obj = sum(sens.omega[n][c.key] for n, c in pol.items())
            best = obj if best is None else min(best, obj)
    return best


def _check_against_brute(name, inst, **opts):
    layers, sens, space, cm, budget = inst
    strict = brute_force(layers, sens, space, cm, budget, 1e-9)
    loose = brute_force(layers, sens, space, cm, budget, 1e-6)
    alloc = get_allocator(name, **opts)
    if loose is None:
        with pytest.raises(InfeasibleBudget) as e:
            alloc.solve(layers, sens, space, budget, cm)
        assert set(e.value.minimum) == set(budget.metrics)
        return
    a = alloc.solve(layers, sens, space, budget, cm)
    assert a.proven_optimal and a.status == "optimal"
    assert cm.satisfies(a.policy, budget, tol=1e-6)
    pol = a.policy.as_dict()
    assert [n for n, _ in a.policy.layers] == [l.name for l in layers]
    for g in space.tie_groups(layers):
        assert len({pol[n] for n in g}) == 1
    assert a.objective == pytest.approx(sens.predict(a.policy), abs=1e-9)
    assert loose - 1e-9 <= a.objective <= strict + 1e-9


def test_registry_lists_both():
    assert {"ilp", "dp"} <= set(list_allocators())
    with pytest.raises(AutocompError, match="unknown allocator 'nope'"):
        get_allocator("nope")


@settings(max_examples=120, **HYP)
@given(inst=instances())
def test_dp_optimal_against_brute_force(inst):
    _check_against_brute("dp", inst)


@settings(max_examples=60, **HYP)
@given(inst=instances())
def test_ilp_highs_optimal_against_brute_force(inst):
    _check_against_brute("ilp", inst, solver="highs")


@settings(max_examples=40, **HYP)
@given(inst=instances(two_constraints=True))
def test_ilp_highs_two_constraints_against_brute_force(inst):
    _check_against_brute("ilp", inst, solver="highs")


@settings(max_examples=8, **HYP)
@given(inst=instances(max_layers=3, two_constraints=True))
def test_ilp_cbc_against_brute_force(inst):
    """CBC runs as a subprocess (~0.1 s a solve), so fewer examples."""
    _check_against_brute("ilp", inst, solver="cbc")


@settings(max_examples=60, **HYP)
@given(inst=instances())
def test_dp_sweep_matches_single_solves(inst):
    """One DP pass answers every point of a sweep exactly as separate solves do."""
    layers, sens, space, cm, budget = inst
    dp = get_allocator("dp")
    try:
        sweep = dp.sweep(layers, sens, space, budget, cm, points=5)
    except InfeasibleBudget:
        assert brute_force(layers, sens, space, cm, budget, 1e-6) is None
        return
    ids = [a.policy.id for a in sweep]
    assert len(ids) == len(set(ids))
    for a in sweep:
        assert cm.satisfies(a.policy, a.budget, tol=1e-6)
        assert a.objective == pytest.approx(dp.solve(layers, sens, space, a.budget, cm).objective, abs=1e-9)
    objs = [a.objective for a in sweep]
    assert objs == sorted(objs, reverse=True)  # larger budgets never do worse


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
    a_ilp = get_allocator("ilp", solver="cbc").solve(digits_layers, sens, space, budget, cm)
    a_dp = get_allocator("dp").solve(digits_layers, sens, space, budget, cm)
    assert a_dp.proven_optimal and a_ilp.proven_optimal
    assert a_dp.objective == pytest.approx(a_ilp.objective, rel=1e-7, abs=1e-12)
    assert a_dp.policy[digits_layers[0].name].w_bits == 8


def test_sweeps_agree_and_cover_joint_policies(digits_layers):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 4, 8], "prune": [0.0, 0.5, 0.75]})
    budget = Budget((Constraint("size", 0.25, True, "size<=25%"),))
    s_ilp = get_allocator("ilp", solver="highs").sweep(digits_layers, sens, space, budget, cm, points=8)
    s_dp = get_allocator("dp").sweep(digits_layers, sens, space, budget, cm, points=8)
    assert [a.objective for a in s_dp] == pytest.approx([a.objective for a in s_ilp], rel=1e-7, abs=1e-12)
    assert any(c.prune > 0 for a in s_dp for _, c in a.policy.layers)  # joint policies come out
    assert all(cm.satisfies(a.policy, budget) for a in s_dp)


@pytest.mark.parametrize("name, opts", ALLOCATORS, ids=ALLOC_IDS)
def test_infeasible_reports_minimum(digits_layers, name, opts):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 4, 8]})
    min_size = cm.offset("size") + sum(l.params * 2 / 8 for l in digits_layers)
    budget = Budget((Constraint("size", min_size * 0.9, False, "size<=tiny"),))
    with pytest.raises(InfeasibleBudget, match="smallest achievable size") as e:
        get_allocator(name, **opts).solve(digits_layers, sens, space, budget, cm)
    assert e.value.minimum["size"] == pytest.approx(min_size)
    with pytest.raises(InfeasibleBudget):
        get_allocator(name, **opts).sweep(digits_layers, sens, space, budget, cm, points=4)


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_ilp_detects_conflicting_constraints(solver):
    """Each constraint alone is achievable, both together are not (2-bit weights are smaller but
    slower here, as without a 2-bit kernel): reported infeasible, with each minimum."""
    layers = _layers([100], [1])
    space = space_from_dict({"w_bits": [2, 8], "a_bits": [8]})
    omega = {"l0": {"w2a8": 1.0, "w8a8": 0.0}}
    cm = CostModel(layers, latency_table={"l0": {"w2a8": 2e-3, "w8a8": 1e-3, "w32a32": 3e-3}})
    budget = Budget((Constraint("size", cm.offset("size") + 100 * 2 / 8, False, "size<=25B"),
                     Constraint("latency", 1.5e-3, False, "latency<=1.5ms")))
    with pytest.raises(InfeasibleBudget, match="together") as e:
        get_allocator("ilp", solver=solver).solve(layers, Sensitivity("t", omega), space, budget, cm)
    assert e.value.minimum == pytest.approx({"size": cm.offset("size") + 25.0, "latency": 1e-3})
    relaxed = Budget((budget.constraints[0], Constraint("latency", 2e-3, False, "latency<=2ms")))
    a = get_allocator("ilp", solver=solver).solve(layers, Sensitivity("t", omega), space, relaxed, cm)
    assert a.policy["l0"].w_bits == 2 and a.costs["latency"] == pytest.approx(2e-3)


def test_dp_refuses_several_constraints(digits_layers):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 4, 8]})
    budget = Budget((Constraint("size", 0.2, True), Constraint("bitops", 0.2, True)))
    with pytest.raises(AutocompError, match="use --allocator ilp"):
        get_allocator("dp").solve(digits_layers, sens, space, budget, cm)


@pytest.mark.parametrize("name, opts", ALLOCATORS, ids=ALLOC_IDS)
def test_ties_respected_when_untied_optimum_differs(name, opts):
    """Two layers whose free optimum differs must share one choice when tied."""
    layers = _layers([1000, 1000, 1000], [1, 1, 1])
    spec = {"w_bits": [2, 8], "a_bits": [8]}
    omega = {"l0": {"w2a8": 0.0, "w8a8": 0.0}, "l1": {"w2a8": 0.1, "w8a8": 0.0}, "l2": {"w2a8": 5.0, "w8a8": 0.0}}
    cm = CostModel(layers)
    budget = Budget((Constraint("size", cm.offset("size") + 1000 * (2 + 2 + 8) / 8, False, "size<=x"),))
    free = get_allocator(name, **opts).solve(layers, Sensitivity("t", omega), space_from_dict(spec), budget, cm)
    assert free.policy["l1"].w_bits == 2 and free.policy["l2"].w_bits == 8
    tied = get_allocator(name, **opts).solve(layers, Sensitivity("t", omega),
                                     space_from_dict({**spec, "ties": [["l1", "l2"]]}), budget, cm)
    assert tied.policy["l1"] == tied.policy["l2"]
    assert tied.objective == pytest.approx(0.1 + 5.0)  # l0 at 8 bits would break the budget


def test_missing_scores_named():
    layers = _layers([10], [1])
    space = space_from_dict({"w_bits": [2, 8]})
    with pytest.raises(AutocompError, match="no score for layer 'l0' choice w8a8"):
        get_allocator("dp").solve(layers, Sensitivity("x", {"l0": {"w2a8": 0.0}}), space,
                                  Budget((Constraint("size", 1.0, True),)), CostModel(layers))


def test_time_limited_solve_never_claims_optimal():
    """A solve stopped by its time limit is reported as not proven optimal (PuLP #649/#711),
    and what it returns still meets the budget."""
    from autocomp.allocators.synthetic import instance

    layers, sens, space, cm, budget = instance(120, seed=1)
    a = get_allocator("ilp", solver="highs", time_limit=1e-3, warm_start=False).solve(layers, sens, space, budget, cm)
    assert not a.proven_optimal and a.status == "feasible (not proven optimal)"
    assert cm.satisfies(a.policy, budget, tol=1e-6)


def test_dominated_choices_removed_without_changing_the_optimum(digits_layers):
    space, sens, cm = _digits_instance(digits_layers, {"w_bits": [2, 3, 4, 6, 8], "prune": [0.0, 0.5]})
    budget = Budget((Constraint("size", 0.12, True, "size<=12%"),))
    full = get_allocator("dp", remove_dominated=False).solve(digits_layers, sens, space, budget, cm)
    fast = get_allocator("dp").solve(digits_layers, sens, space, budget, cm)
    assert fast.objective == pytest.approx(full.objective, rel=1e-12)
    from autocomp.allocators._problem import build_problem

    prob = build_problem(digits_layers, sens.omega, space.choices(digits_layers), [], ["size"], cm)
    assert prob.removed > 0  # e.g. w4 pruned 50 % costs what w2 does, and is scored worse or better
