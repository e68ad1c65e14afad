"""The allocator contract: ``solve`` one budget exactly, ``sweep`` many into a frontier.

Every allocator re-verifies what it returns against every constraint, and reports an infeasible
budget with the smallest achievable value of each constrained metric.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from autocomp.allocators._problem import Problem, build_problem
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


@dataclass(frozen=True)
class RawSolution:
    """What a solver returns for one budget point: a choice index per problem item."""

    picks: tuple[int, ...]
    proven_optimal: bool


class Allocator:
    """Base class: subclasses set ``name`` and implement :meth:`_solve_points`.

    Example:
        >>> from autocomp.allocators import get_allocator
        >>> alloc = get_allocator("dp")
        >>> # alloc.solve(layers, sensitivity, space, parse_budget("size<=25%")).policy
    """

    name = ""
    #: metrics this allocator can constrain at once (None: any number)
    max_constraints: int | None = None

    def __init__(self, **options: Any):
        self.options = options

    # --- to implement ---------------------------------------------------------------------
    def _solve_points(self, prob: Problem, limits: list[dict[str, float]]) -> list[RawSolution | None]:
        """Solve ``prob`` once per entry of ``limits`` (metric -> bound on the summed item
        costs, offsets already subtracted); ``None`` marks an infeasible point. Points come in
        ascending order of the first metric, so a solver may reuse work between them."""
        raise NotImplementedError  # pragma: no cover - abstract

    # --- shared -----------------------------------------------------------------------------
    def _prepare(self, layers, sensitivity, space, budget: Budget, cm: CostModel):
        if self.max_constraints is not None and len(budget.constraints) > self.max_constraints:
            raise AutocompError(f"the {self.name} allocator handles {self.max_constraints} constraint(s); "
                                f"budget {budget.describe()!r} has {len(budget.constraints)}: use --allocator ilp")
        ties = space.tie_groups(layers)
        choices = _intersect_ties(space.choices(layers), ties)
        omega = sensitivity.omega if hasattr(sensitivity, "omega") else sensitivity
        _check_scores(layers, omega, choices)
        prob = build_problem(layers, omega, choices, ties, budget.metrics, cm,
                             remove_dominated=self.options.get("remove_dominated", True))
        return choices, ties, prob

    def solve(self, layers: Sequence[LayerInfo], sensitivity, space, budget: Budget,
              cost_model: CostModel | None = None) -> Allocation:
        """The minimum-omega policy meeting ``budget``.

        Raises:
            InfeasibleBudget: no policy of the space fits; ``.minimum`` holds the smallest
                achievable value of each constrained metric.
        """
        cm = cost_model or CostModel(layers)
        choices, ties, prob = self._prepare(layers, sensitivity, space, budget, cm)
        check_feasible(layers, choices, budget, cm)
        raw = self._solve_points(prob, [_limits(budget, cm, prob)])[0]
        if raw is None:
            _raise_conflict(prob, budget, cm)
        return _finish(prob, raw, layers, choices, ties, budget, cm)

    def sweep(self, layers: Sequence[LayerInfo], sensitivity, space, budget: Budget,
              cost_model: CostModel | None = None, points: int = 10) -> list[Allocation]:
        """Solve across ``points`` budgets on the first constraint's metric, from the smallest
        achievable value up to the given bound (HAWQ-V2's frontier), spaced quadratically so
        the steep low-budget end gets more points; duplicates removed. The problem is built
        once and every point reuses it."""
        cm = cost_model or CostModel(layers)
        choices, ties, prob = self._prepare(layers, sensitivity, space, budget, cm)
        primary = budget.constraints[0]
        hi = primary.limit(cm)
        lo = prob.min_cost(primary.metric)
        if lo > hi * (1 + 1e-9):
            check_feasible(layers, choices, budget, cm)
        budgets = []
        for i in range(points):
            # Quadratic spacing: accuracy changes fastest near the smallest budgets.
            lim = hi if points == 1 else lo + (hi - lo) * (i / (points - 1)) ** 2
            budgets.append(budget.with_limit(primary.metric, lim, cm) if i < points - 1 else budget)
        raws = self._solve_points(prob, [_limits(b, cm, prob) for b in budgets])
        out, seen = [], set()
        for b, raw in zip(budgets, raws):
            if raw is None:
                continue  # other constraints cut off the low end of the sweep
            a = _finish(prob, raw, layers, choices, ties, b, cm)
            if a.policy.id not in seen:
                seen.add(a.policy.id)
                out.append(a)
        if not out:
            check_feasible(layers, choices, budget, cm)
            _raise_conflict(prob, budget, cm)
        return out


def _limits(budget: Budget, cm: CostModel, prob: Problem) -> dict[str, float]:
    return {c.metric: c.limit(cm) - prob.offsets[c.metric] for c in budget.constraints}


def _finish(prob: Problem, raw: RawSolution, layers, choices, ties, budget: Budget, cm: CostModel) -> Allocation:
    policy = prob.policy(raw.picks)
    verify(policy, layers, choices, ties, budget, cm)
    costs = cm.costs(policy, sorted(set(budget.metrics) | {"size", "bitops", "avg_bits"}))
    status = "optimal" if raw.proven_optimal else "feasible (not proven optimal)"
    return Allocation(policy, prob.objective(raw.picks), status, raw.proven_optimal, costs, budget)


def _raise_conflict(prob: Problem, budget: Budget, cm: CostModel) -> None:
    minimum = {c.metric: prob.min_cost(c.metric) for c in budget.constraints}
    each = ", ".join(f"smallest {m}={cm.format(m, v)}" for m, v in minimum.items())
    raise InfeasibleBudget(f"infeasible budget: no policy meets {budget.describe()} together, although each "
                           f"constraint alone can be met ({each})", minimum)


def _check_scores(layers, omega, choices) -> None:
    for l in layers:
        row = omega.get(l.name)
        if row is None:
            raise AutocompError(f"the sensitivity has no scores for layer {l.name!r}")
        for c in choices[l.name]:
            if c.key not in row:
                raise AutocompError(f"the sensitivity has no score for layer {l.name!r} choice {c.key} "
                                    "(scored for another search space?)")


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
    "dp": "autocomp.allocators.dp:DPAllocator",
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
