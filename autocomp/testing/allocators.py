"""The allocator contract: exact against brute force on small random instances, limits never
broken, infeasible budgets reported with the smallest achievable cost, tied layers sharing one
choice, and no more constraints accepted than the allocator handles.

Run it on an allocator of your own (registered with :func:`autocomp.allocators.register`)::

    from autocomp.testing import AllocatorContract

    class TestMine(AllocatorContract):
        allocator = "mine"            # the registered name
        options = {"time_limit": 10}  # what get_allocator builds it with
        examples = 60                 # hypothesis examples per property (fewer for a slow solver)

An allocator with ``max_constraints = 1`` (like ``dp``) is checked to refuse a two-metric budget
in one line instead of being held to the two-constraint properties. One with ``pairwise = True``
(like ``ilp``) is held to the brute-force optimum of random problems with pairwise terms (some
negative, some across a tie group); one without is checked to refuse them in one line. Limits are met up to a
relative ``1e-9``; the brute force accepts either side of that tolerance as optimal.
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from autocomp.allocators import Allocator, get_allocator, list_allocators
from autocomp.budget import Budget, Constraint, CostModel
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.profile import LayerInfo
from autocomp.search_spaces import space_from_dict
from autocomp.sensitivity import Sensitivity

# Derandomized: every allocator meets the same instances, and a failure reproduces.
HYPOTHESIS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def layer_table(params: Sequence[int], spatial: Sequence[int]) -> list[LayerInfo]:
    """Linear layers ``l0, l1, ...`` with ``params[i]`` weights and ``params[i] * spatial[i]`` MACs.

    Example:
        >>> [(l.name, l.params, l.macs) for l in layer_table([10, 20], [1, 3])]
        [('l0', 10, 10), ('l1', 20, 60)]
    """
    return [LayerInfo(f"l{i}", "Linear", (p, 1), p, 0, p * s, (1,), (p,), i)
            for i, (p, s) in enumerate(zip(params, spatial))]


def cost_range(layers, space, cm: CostModel, metric: str) -> tuple[float, float]:
    """The smallest and largest achievable value of ``metric`` over the space (ties ignored)."""
    ch = space.choices(layers)
    lo = cm.offset(metric) + sum(min(cm.layer_cost(metric, l, c) for c in ch[l.name]) for l in layers)
    hi = cm.offset(metric) + sum(max(cm.layer_cost(metric, l, c) for c in ch[l.name]) for l in layers)
    return lo, hi


@st.composite
def instances(draw, max_layers: int = 4, metrics: int = 1):
    """``(layers, sensitivity, space, cost_model, budget)``: up to ``max_layers`` layers, up to
    three weight bit-widths x two activation bit-widths x two pruning ratios, sometimes an
    override and a tie, omegas on a coarse grid (so that exact ties between choices are common),
    and ``metrics`` constraints (one of size / bitops / avg_bits; or size and bitops) anywhere
    from the smallest achievable cost to the largest."""
    n = draw(st.integers(1, max_layers))
    params = draw(st.lists(st.integers(1, 2000), min_size=n, max_size=n))
    spatial = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    w_bits = draw(st.lists(st.sampled_from([1, 1.58, 2, 3, 4, 8]), min_size=1, max_size=3, unique=True))
    a_bits = draw(st.lists(st.sampled_from([4, 8]), min_size=1, max_size=2, unique=True))
    prune = draw(st.lists(st.sampled_from([0.0, 0.5]), min_size=1, max_size=2, unique=True))
    spec: dict[str, Any] = {"name": "random", "w_bits": w_bits, "a_bits": a_bits, "prune": prune}
    if n > 1 and draw(st.booleans()):
        spec["overrides"] = [{"match": "@first", "w_bits": [8]}]
    if n > 2 and draw(st.booleans()):
        spec["ties"] = [["l1", "l2"]]
    space = space_from_dict(spec)
    layers = layer_table(params, spatial)
    omega = {l.name: {c.key: draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 7.25]))
                      for c in space.choices_for(l, n)} for l in layers}
    cm = CostModel(layers)
    names = ["size", "bitops"] if metrics > 1 else [draw(st.sampled_from(["size", "bitops", "avg_bits"]))]
    cons = []
    for m in names:
        lo, hi = cost_range(layers, space, cm, m)
        frac = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.8, 1.0]))
        cons.append(Constraint(m, lo + frac * (hi - lo), False, f"{m}<=x"))
    return layers, Sensitivity("random", omega), space, cm, Budget(tuple(cons))


@st.composite
def pairwise_instances(draw, max_layers: int = 4, metrics: int = 1):
    """``(layers, sensitivity, space, cost_model, budget, pairwise)``: an :func:`instances`
    problem plus pairwise terms on a random set of layer pairs (a tied pair included when
    drawn), each choice pair's term on a coarse grid with negatives, zeros and keys the space
    does not allow (which the allocators must ignore)."""
    layers, sens, space, cm, budget = draw(instances(max_layers, metrics))
    names = [l.name for l in layers]
    all_pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    pairs = draw(st.lists(st.sampled_from(all_pairs), unique=True, max_size=len(all_pairs))) if all_pairs else []
    ch = space.choices(layers)
    grid = st.sampled_from([-1.5, -0.5, 0.0, 0.0, 0.5, 1.0, 4.0])
    pairwise = {(a, b): {(ca.key, cb.key): draw(grid) for ca in ch[a] for cb in ch[b]} for a, b in pairs}
    if pairs:
        pairwise[pairs[0]][("w16a16", "w16a16")] = 9.0    # no layer allows it: ignored
    return layers, sens, space, cm, budget, pairwise


def objective(sens: Sensitivity, policy: dict, pairwise=None) -> float:
    """Summed omega of ``policy`` (layer -> Choice) plus the pairwise terms its choices meet."""
    out = sum(sens.omega[n][c.key] for n, c in policy.items())
    for (a, b), row in (pairwise or {}).items():
        out += row.get((policy[a].key, policy[b].key), 0.0)
    return out


def brute_force(layers, sens: Sensitivity, space, cm: CostModel, budget: Budget, tol: float,
                pairwise=None) -> float | None:
    """The minimum objective (summed omega, plus ``pairwise`` terms) over every tie-respecting
    policy within ``tol`` (relative and absolute) of each limit; ``None`` when no policy fits."""
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
            obj = objective(sens, pol, pairwise)
            best = obj if best is None else min(best, obj)
    return best


class AllocatorContract:
    """What every registered allocator guarantees. Subclasses set the class attributes below."""

    allocator: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    examples: ClassVar[int] = 60     # hypothesis examples per property
    max_layers: ClassVar[int] = 4    # layers of the largest random instance (brute force: 12^n)

    def make(self) -> Allocator:
        return get_allocator(self.allocator, **self.options)

    def check_against_brute_force(self, inst) -> None:
        """``inst`` solved exactly as the brute force does, or reported infeasible when it is."""
        layers, sens, space, cm, budget = inst
        strict = brute_force(layers, sens, space, cm, budget, 1e-9)
        loose = brute_force(layers, sens, space, cm, budget, 1e-6)
        alloc = self.make()
        if loose is None:
            with pytest.raises(InfeasibleBudget) as e:
                alloc.solve(layers, sens, space, budget.resolve(cm), cm)
            assert set(e.value.minimum) == set(budget.metrics)
            return
        a = alloc.solve(layers, sens, space, budget.resolve(cm), cm)
        assert a.proven_optimal and a.status == "optimal"
        assert cm.satisfies(a.policy, budget, tol=1e-6)
        assert [n for n, _ in a.policy.layers] == [l.name for l in layers]
        pol = a.policy.as_dict()
        for g in space.tie_groups(layers):
            assert len({pol[n] for n in g}) == 1, f"tie {g} broken"
        assert a.objective == pytest.approx(sens.predict(a.policy), abs=1e-9)
        assert loose - 1e-9 <= a.objective <= strict + 1e-9, (loose, a.objective, strict)

    def check_pairwise_against_brute_force(self, inst) -> None:
        """Pairwise terms: the objective (omega plus the terms the policy meets) is the brute
        force's optimum, the limits and ties hold, and a sweep's points are those optima too."""
        layers, sens, space, cm, budget, pairwise = inst
        strict = brute_force(layers, sens, space, cm, budget, 1e-9, pairwise)
        loose = brute_force(layers, sens, space, cm, budget, 1e-6, pairwise)
        alloc = self.make()
        if loose is None:
            with pytest.raises(InfeasibleBudget):
                alloc.solve(layers, sens, space, budget.resolve(cm), cm, pairwise=pairwise)
            return
        a = alloc.solve(layers, sens, space, budget.resolve(cm), cm, pairwise=pairwise)
        assert a.proven_optimal
        assert cm.satisfies(a.policy, budget, tol=1e-6)
        pol = a.policy.as_dict()
        for g in space.tie_groups(layers):
            assert len({pol[n] for n in g}) == 1, f"tie {g} broken"
        assert a.objective == pytest.approx(objective(sens, pol, pairwise), abs=1e-9)
        assert loose - 1e-9 <= a.objective <= strict + 1e-9, (loose, a.objective, strict)
        for s in alloc.sweep(layers, sens, space, budget.resolve(cm), cm, points=3, pairwise=pairwise):
            lim = Budget(tuple(Constraint(l.metric, l.bound, False, l.text) for l in s.limits))
            best = brute_force(layers, sens, space, cm, lim, 1e-6, pairwise)
            assert best is not None and s.objective == pytest.approx(best, abs=1e-6)
            assert s.objective == pytest.approx(objective(sens, s.policy.as_dict(), pairwise), abs=1e-9)

    def _property(self, check, strategy, examples: int | None = None) -> None:
        @settings(max_examples=examples or self.examples, **HYPOTHESIS)
        @given(inst=strategy)
        def run(inst):
            check(inst)

        run()

    def _handles(self, n: int) -> bool:
        m = self.make().max_constraints
        return m is None or m >= n

    # --- the contract ---------------------------------------------------------------------
    def test_registered_under_its_name(self):
        assert self.allocator in list_allocators()
        alloc = self.make()
        assert isinstance(alloc, Allocator) and alloc.name == self.allocator

    def test_optimal_against_brute_force(self):
        self._property(self.check_against_brute_force, instances(self.max_layers))

    def test_two_constraints_against_brute_force(self):
        if not self._handles(2):
            pytest.skip(f"{self.allocator} handles one constraint")
        self._property(self.check_against_brute_force, instances(self.max_layers, metrics=2))

    def test_pairwise_against_brute_force(self):
        if not self.make().pairwise:
            pytest.skip(f"{self.allocator} takes no pairwise terms")
        self._property(self.check_pairwise_against_brute_force, pairwise_instances(self.max_layers))

    def test_pairwise_two_constraints_against_brute_force(self):
        if not self.make().pairwise or not self._handles(2):
            pytest.skip(f"{self.allocator} takes no pairwise terms or handles one constraint")
        self._property(self.check_pairwise_against_brute_force, pairwise_instances(self.max_layers, metrics=2),
                       max(4, self.examples // 3))

    def test_pairwise_terms_change_the_answer(self):
        """Two layers that are cheap alone but hurt together: the additive optimum compresses
        both, the pairwise one only one of them (if pairwise terms were dropped, this fails)."""
        layers = layer_table([100, 100, 100], [1, 1, 1])
        space = space_from_dict({"w_bits": [2, 8], "a_bits": [8]})
        sens = Sensitivity("t", {"l0": {"w2a8": 0.1, "w8a8": 0.0}, "l1": {"w2a8": 0.2, "w8a8": 0.0},
                                 "l2": {"w2a8": 1.0, "w8a8": 0.0}})
        cm = CostModel(layers)
        limits = Budget((Constraint("size", cm.offset("size") + 100 * (2 + 2 + 8) / 8, False, "size<=x"),)).resolve(cm)
        alloc = self.make()
        if not alloc.pairwise:
            with pytest.raises(AutocompError, match="--allocator ilp") as e:
                alloc.solve(layers, sens, space, limits, cm, pairwise={("l0", "l1"): {("w2a8", "w2a8"): 5.0}})
            assert "\n" not in str(e.value)
            with pytest.raises(AutocompError, match="interaction"):
                alloc.check_pairwise()
            return
        additive = alloc.solve(layers, sens, space, limits, cm)
        assert [additive.policy[n].w_bits for n in ("l0", "l1", "l2")] == [2, 2, 8]
        a = alloc.solve(layers, sens, space, limits, cm, pairwise={("l0", "l1"): {("w2a8", "w2a8"): 5.0}})
        assert [a.policy[n].w_bits for n in ("l0", "l1", "l2")] == [2, 8, 2]
        assert a.objective == pytest.approx(0.1 + 1.0)

    def test_refuses_more_constraints_than_it_handles(self):
        alloc = self.make()
        if alloc.max_constraints is None:
            pytest.skip(f"{self.allocator} handles any number of constraints")
        layers = layer_table([10, 20], [1, 1])
        cm = CostModel(layers)
        names = ["size", "bitops", "avg_bits"][:alloc.max_constraints + 1]
        if len(names) <= alloc.max_constraints:
            pytest.skip(f"{self.allocator} handles every built-in metric at once")
        budget = Budget(tuple(Constraint(m, 0.5, True) for m in names))
        with pytest.raises(AutocompError, match=f"handles {alloc.max_constraints} constraint") as e:
            alloc.check_constraints(budget.metrics)   # what the pipeline checks before it stores anything
        assert "\n" not in str(e.value)
        sens = Sensitivity("t", {l.name: {"w2a8": 1.0, "w8a8": 0.0} for l in layers})
        with pytest.raises(AutocompError, match="constraint"):
            alloc.solve(layers, sens, space_from_dict({"w_bits": [2, 8]}), budget.resolve(cm), cm)

    def test_sweep_matches_single_solves(self):
        """Every point of a sweep is what a single solve at its limits returns; distinct
        policies, within their limits, no worse for a larger budget."""
        alloc = self.make()

        def check(inst):
            layers, sens, space, cm, budget = inst
            try:
                sweep = alloc.sweep(layers, sens, space, budget.resolve(cm), cm, points=5)
            except InfeasibleBudget:
                assert brute_force(layers, sens, space, cm, budget, 1e-6) is None
                return
            ids = [a.policy.id for a in sweep]
            assert len(ids) == len(set(ids))
            for a in sweep:
                assert cm.satisfies(a.policy, a.limits, tol=1e-6)
                single = alloc.solve(layers, sens, space, a.limits, cm)
                assert a.objective == pytest.approx(single.objective, abs=1e-9)
            objs = [a.objective for a in sweep]
            assert objs == sorted(objs, reverse=True)

        self._property(check, instances(self.max_layers))

    def test_infeasible_budget_reports_the_minimum(self):
        from autocomp.allocators.synthetic import instance

        layers = instance(6, seed=0)[0]
        space = space_from_dict({"w_bits": [2, 4, 8]})
        rng = np.random.default_rng(0)
        sens = Sensitivity("t", {l.name: {c.key: float(rng.random()) for c in space.choices_for(l, 6)}
                                 for l in layers})
        cm = CostModel(layers)
        smallest = cm.offset("size") + sum(l.params * 2 / 8 for l in layers)
        limits = Budget((Constraint("size", smallest * 0.9, False, "size<=tiny"),)).resolve(cm)
        alloc = self.make()
        with pytest.raises(InfeasibleBudget, match="smallest achievable size") as e:
            alloc.solve(layers, sens, space, limits, cm)
        assert e.value.minimum["size"] == pytest.approx(smallest)
        assert "\n" not in str(e.value)
        with pytest.raises(InfeasibleBudget):
            alloc.sweep(layers, sens, space, limits, cm, points=4)

    def test_conflicting_constraints_are_reported_with_each_minimum(self):
        """Each constraint alone can be met, both together cannot (2-bit weights smaller but
        slower, as without a 2-bit kernel)."""
        if not self._handles(2):
            pytest.skip(f"{self.allocator} handles one constraint")
        layers = layer_table([100], [1])
        space = space_from_dict({"w_bits": [2, 8], "a_bits": [8]})
        sens = Sensitivity("t", {"l0": {"w2a8": 1.0, "w8a8": 0.0}})
        cm = CostModel(layers, latency_table={"l0": {"w2a8": 2e-3, "w8a8": 1e-3, "w32a32": 3e-3}})
        size = Constraint("size", cm.offset("size") + 100 * 2 / 8, False, "size<=25B")
        budget = Budget((size, Constraint("latency", 1.5e-3, False, "latency<=1.5ms")))
        with pytest.raises(InfeasibleBudget, match="together") as e:
            self.make().solve(layers, sens, space, budget.resolve(cm), cm)
        assert e.value.minimum == pytest.approx({"size": cm.offset("size") + 25.0, "latency": 1e-3})
        relaxed = Budget((size, Constraint("latency", 2e-3, False, "latency<=2ms")))
        a = self.make().solve(layers, sens, space, relaxed.resolve(cm), cm)
        assert a.policy["l0"].w_bits == 2 and a.costs["latency"] == pytest.approx(2e-3)

    def test_ties_respected_when_the_untied_optimum_differs(self):
        layers = layer_table([1000, 1000, 1000], [1, 1, 1])
        spec = {"w_bits": [2, 8], "a_bits": [8]}
        sens = Sensitivity("t", {"l0": {"w2a8": 0.0, "w8a8": 0.0}, "l1": {"w2a8": 0.1, "w8a8": 0.0},
                                 "l2": {"w2a8": 5.0, "w8a8": 0.0}})
        cm = CostModel(layers)
        limits = Budget((Constraint("size", cm.offset("size") + 1000 * (2 + 2 + 8) / 8, False, "size<=x"),)).resolve(cm)
        free = self.make().solve(layers, sens, space_from_dict(spec), limits, cm)
        assert free.policy["l1"].w_bits == 2 and free.policy["l2"].w_bits == 8
        tied = self.make().solve(layers, sens, space_from_dict({**spec, "ties": [["l1", "l2"]]}), limits, cm)
        assert tied.policy["l1"] == tied.policy["l2"]
        assert tied.objective == pytest.approx(0.1 + 5.0)   # l0 at 8 bits would break the budget

    def test_missing_scores_are_named(self):
        layers = layer_table([10], [1])
        cm = CostModel(layers)
        limits = Budget((Constraint("size", 1.0, True),)).resolve(cm)
        with pytest.raises(AutocompError, match="no score for layer 'l0' choice w8a8"):
            self.make().solve(layers, Sensitivity("x", {"l0": {"w2a8": 0.0}}), space_from_dict({"w_bits": [2, 8]}),
                              limits, cm)
