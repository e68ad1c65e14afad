"""The allocator contract: ``solve`` one budget exactly, ``sweep`` many into a frontier.

Every allocator re-verifies what it returns against every constraint, and reports an infeasible
budget with the smallest achievable value of each constrained metric.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from autocomp.budget import Budget, CostModel
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo


@dataclass(frozen=True)
class Allocation:
    """A solved policy with its provenance."""

    policy: Policy
    objective: float
    status: str                 # "optimal" | "feasible (not proven optimal)"
    proven_optimal: bool
    costs: dict[str, float] = field(default_factory=dict)
    budget: Budget | None = None


class Allocator:
    name = ""

    def __init__(self, **options: Any):
        self.options = options

    # --- to implement ---------------------------------------------------------------------
    def _solve(self, layers: Sequence[LayerInfo], omega: dict[str, dict[str, float]],
               choices: dict[str, list[Choice]], ties: list[list[str]], budget: Budget,
               cm: CostModel) -> Allocation:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    def solve(self, layers: Sequence[LayerInfo], sensitivity, space, budget: Budget,
              cost_model: CostModel | None = None) -> Allocation:
        """The minimum-omega policy meeting ``budget``.

        Raises:
            InfeasibleBudget: no policy of the space fits; ``.minimum`` holds the smallest
                achievable value of each constrained metric.
        """
        cm = cost_model or CostModel(layers)
        choices = space.choices(layers)
        ties = space.tie_groups(layers)
        choices = _intersect_ties(choices, ties)
        check_feasible(layers, choices, budget, cm)
        alloc = self._solve(layers, sensitivity.omega, choices, ties, budget, cm)
        verify(alloc.policy, layers, choices, ties, budget, cm)
        costs = cm.costs(alloc.policy, sorted(set(budget.metrics) | {"size", "bitops", "avg_bits"}))
        return Allocation(alloc.policy, alloc.objective, alloc.status, alloc.proven_optimal, costs, budget)

    def sweep(self, layers: Sequence[LayerInfo], sensitivity, space, budget: Budget,
              cost_model: CostModel | None = None, points: int = 10) -> list[Allocation]:
        """Solve across ``points`` budgets on the first constraint's metric, from the smallest
        achievable value up to the given bound (HAWQ-V2's frontier), spaced quadratically so
        the steep low-budget end gets more points; duplicates removed."""
        cm = cost_model or CostModel(layers)
        choices = _intersect_ties(space.choices(layers), space.tie_groups(layers))
        primary = budget.constraints[0]
        hi = primary.limit(cm)
        lo = min_cost(layers, choices, primary.metric, cm)
        if lo > hi * (1 + 1e-9):
            check_feasible(layers, choices, budget, cm)
        out, seen = [], set()
        for i in range(points):
            # Quadratic spacing: accuracy changes fastest near the smallest budgets.
            lim = hi if points == 1 else lo + (hi - lo) * (i / (points - 1)) ** 2
            b = budget.with_limit(primary.metric, lim, cm) if i < points - 1 else budget
            try:
                a = self.solve(layers, sensitivity, space, b, cm)
            except InfeasibleBudget:
                continue  # other constraints cut off the low end of the sweep
            if a.policy.id not in seen:
                seen.add(a.policy.id)
                out.append(a)
        if not out:
            check_feasible(layers, choices, budget, cm)
            raise InfeasibleBudget(f"no policy meets {budget.describe()}")
        return out


def _intersect_ties(choices: dict[str, list[Choice]], ties: list[list[str]]) -> dict[str, list[Choice]]:
    out = dict(choices)
    for g in ties:
        common = [c for c in out[g[0]] if all(c in out[n] for n in g[1:])]
        if not common:
            raise AutocompError(f"tied layers {', '.join(g)} have no choice in common")
        for n in g:
            out[n] = common
    return out


def min_cost(layers, choices, metric: str, cm: CostModel) -> float:
    return cm.offset(metric) + sum(min(cm.layer_cost(metric, l, c) for c in choices[l.name]) for l in layers)


def check_feasible(layers, choices, budget: Budget, cm: CostModel) -> None:
    """Raise :class:`InfeasibleBudget` when some constraint is below its smallest achievable value."""
    minimum, bad = {}, []
    for c in budget.constraints:
        m = min_cost(layers, choices, c.metric, cm)
        minimum[c.metric] = m
        if m > c.limit(cm) * (1 + 1e-9) + 1e-12:
            bad.append(c)
    if bad:
        parts = []
        for c in bad:
            m = minimum[c.metric]
            rel = f" ({cm.relative(c.metric, m):.1%} of fp32)" if c.metric != "avg_bits" else ""
            parts.append(f"{c.describe()} is below the smallest achievable {c.metric}={cm.format(c.metric, m)}{rel}")
        raise InfeasibleBudget("infeasible budget: " + "; ".join(parts), minimum)


def verify(policy: Policy, layers, choices, ties, budget: Budget, cm: CostModel) -> None:
    """Re-check a solver's answer; a violation is a bug in the allocator, never returned."""
    pol = policy.as_dict()
    for l in layers:
        if pol.get(l.name) not in choices[l.name]:
            raise AssertionError(f"allocator chose {pol.get(l.name)} for {l.name}, not in its choices")
    for g in ties:
        if len({pol[n] for n in g}) != 1:
            raise AssertionError(f"allocator broke the tie {g}")
    bad = cm.violations(policy, budget, tol=1e-6)
    if bad:
        raise AssertionError(f"allocator returned a policy violating {', '.join(bad)}")


_REGISTRY: dict[str, str | Callable[..., Allocator]] = {
    "ilp": "autocomp.allocators.ilp:ILPAllocator",
}


def register(name: str, factory: str | Callable[..., Allocator]) -> None:
    _REGISTRY[name] = factory


def list_allocators() -> list[str]:
    return sorted(_REGISTRY)


def get_allocator(name: str, **options: Any) -> Allocator:
    if name not in _REGISTRY:
        raise AutocompError(f"unknown allocator {name!r}: choose from {', '.join(list_allocators())}")
    f = _REGISTRY[name]
    if isinstance(f, str):
        mod, _, attr = f.partition(":")
        f = getattr(importlib.import_module(mod), attr)
    return f(**options)
