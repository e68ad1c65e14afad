"""The allocator contract: ``solve`` one budget exactly, ``sweep`` many into a frontier.

Allocators take :class:`~autocomp.budget.Limits` (a budget resolved once to absolute bounds).
Every allocator re-verifies what it returns against every limit, and reports an infeasible budget
with the smallest achievable value of each constrained metric. The feasibility check and the
constraint-count check live here only; the pipeline calls them before it stores anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from autocomp.allocators._problem import Problem, build_problem
from autocomp.budget import Budget, CostModel, Limits
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.interactions import PairTerms
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.registry import Registry


@dataclass(frozen=True)
class Allocation:
    """A solved policy with its provenance (``limits``: what it was solved for)."""

    policy: Policy
    objective: float
    status: str                 # "optimal" | "feasible (not proven optimal)"
    proven_optimal: bool
    costs: dict[str, float] = field(default_factory=dict)
    limits: Limits | None = None

    @property
    def budget(self) -> Budget | None:
        """The limits as constraints (what a study stores with the policy)."""
        return self.limits.budget if self.limits is not None else None


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
        >>> # alloc.solve(layers, sensitivity, space, parse_budget("size<=25%").resolve(cm), cm).policy
    """

    name = ""
    #: metrics this allocator can constrain at once (None: any number)
    max_constraints: int | None = None
    #: whether it solves with pairwise terms (measured interactions) exactly
    pairwise: bool = False

    def __init__(self, **options: Any):
        self.options = options

    # --- to implement ---------------------------------------------------------------------
    def _solve_points(self, prob: Problem, limits: list[dict[str, float]]) -> list[RawSolution | None]:
        """Solve ``prob`` once per entry of ``limits`` (metric -> bound on the summed item
        costs, offsets already subtracted); ``None`` marks an infeasible point. Points come in
        ascending order of the first metric, so a solver may reuse work between them."""
        raise NotImplementedError  # pragma: no cover - abstract

    # --- shared -----------------------------------------------------------------------------
    def check_constraints(self, metrics: Sequence[str], text: str = "") -> None:
        """Raise :class:`AutocompError` when this allocator cannot bound that many metrics."""
        if self.max_constraints is not None and len(metrics) > self.max_constraints:
            raise AutocompError(f"the {self.name} allocator handles {self.max_constraints} constraint(s); "
                                f"budget {text or ', '.join(metrics)!r} has {len(metrics)}: use --allocator ilp")

    def check_pairwise(self) -> None:
        """Raise :class:`AutocompError` when this allocator cannot take pairwise terms."""
        if not self.pairwise:
            raise AutocompError(f"the {self.name} allocator is exact for additive sensitivities only and takes no "
                                "interaction terms (--interactions): use --allocator ilp")

    def _prepare(self, layers, sensitivity, space, limits: Limits, cm: CostModel, pairwise=None):
        self.check_constraints(limits.metrics, limits.describe())
        if pairwise:
            self.check_pairwise()
        choices, ties = space.resolved_choices(layers)
        omega = sensitivity.omega if hasattr(sensitivity, "omega") else sensitivity
        _check_scores(layers, omega, choices)
        prob = build_problem(layers, omega, choices, ties, limits.metrics, cm,
                             remove_dominated=self.options.get("remove_dominated", True), pairwise=pairwise)
        return choices, ties, prob

    def solve(self, layers: Sequence[LayerInfo], sensitivity, space, limits: Limits,
              cost_model: CostModel, pairwise: PairTerms | None = None) -> Allocation:
        """The minimum-omega policy within ``limits`` (omega plus ``pairwise`` terms when given:
        (layer_i, layer_j) -> (choice_key_i, choice_key_j) -> term, see
        :meth:`autocomp.interactions.Interactions.pairwise`).

        Raises:
            InfeasibleBudget: no policy of the space fits; ``.minimum`` holds the smallest
                achievable value of each constrained metric.
        """
        cm = cost_model
        choices, ties, prob = self._prepare(layers, sensitivity, space, limits, cm, pairwise)
        check_feasible(layers, choices, limits, cm)
        raw = self._solve_points(prob, [_item_limits(limits, prob)])[0]
        if raw is None:
            _raise_conflict(prob, limits, cm)
        return _finish(prob, raw, layers, choices, ties, limits, cm)

    def sweep(self, layers: Sequence[LayerInfo], sensitivity, space, limits: Limits,
              cost_model: CostModel, points: int = 10, pairwise: PairTerms | None = None) -> list[Allocation]:
        """Solve across ``points`` bounds on the first limit's metric, from the smallest
        achievable value up to the given bound (HAWQ-V2's frontier), spaced quadratically so
        the steep low-budget end gets more points; duplicates removed. The problem is built
        once and every point reuses it. ``pairwise``: as in :meth:`solve`."""
        cm = cost_model
        choices, ties, prob = self._prepare(layers, sensitivity, space, limits, cm, pairwise)
        primary = limits.primary
        hi = primary.bound
        lo = prob.min_cost(primary.metric)
        if lo > hi * (1 + 1e-9):
            check_feasible(layers, choices, limits, cm)
        steps = []
        for i in range(points):
            # Quadratic spacing: accuracy changes fastest near the smallest budgets.
            lim = hi if points == 1 else lo + (hi - lo) * (i / (points - 1)) ** 2
            steps.append(limits.with_limit(primary.metric, lim) if i < points - 1 else limits)
        raws = self._solve_points(prob, [_item_limits(s, prob) for s in steps])
        out, seen = [], set()
        for s, raw in zip(steps, raws):
            if raw is None:
                continue  # other constraints cut off the low end of the sweep
            a = _finish(prob, raw, layers, choices, ties, s, cm)
            if a.policy.id not in seen:
                seen.add(a.policy.id)
                out.append(a)
        if not out:
            check_feasible(layers, choices, limits, cm)
            _raise_conflict(prob, limits, cm)
        return out


def _item_limits(limits: Limits, prob: Problem) -> dict[str, float]:
    return {l.metric: l.bound - prob.offsets[l.metric] for l in limits}


def _finish(prob: Problem, raw: RawSolution, layers, choices, ties, limits: Limits, cm: CostModel) -> Allocation:
    policy = prob.policy(raw.picks)
    verify(policy, layers, choices, ties, limits, cm)
    costs = cm.costs(policy, sorted(set(limits.metrics) | set(cm.metrics)))
    status = "optimal" if raw.proven_optimal else "feasible (not proven optimal)"
    return Allocation(policy, prob.objective(raw.picks), status, raw.proven_optimal, costs, limits)


def _raise_conflict(prob: Problem, limits: Limits, cm: CostModel) -> None:
    minimum = {m: prob.min_cost(m) for m in limits.metrics}
    each = ", ".join(f"smallest {m}={cm.format(m, v)}" for m, v in minimum.items())
    raise InfeasibleBudget(f"infeasible budget: no policy meets {limits.describe()} together, although each "
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


def min_cost(layers: Sequence[LayerInfo], choices: Mapping[str, Sequence[Choice]], metric: str,
             cm: CostModel) -> float:
    """The smallest achievable value of ``metric`` when each layer picks among its ``choices``."""
    return cm.offset(metric) + sum(min(cm.layer_cost(metric, l, c) for c in choices[l.name]) for l in layers)


def check_feasible(layers: Sequence[LayerInfo], choices: Mapping[str, Sequence[Choice]], limits: Limits,
                   cm: CostModel) -> None:
    """Raise :class:`InfeasibleBudget` when some limit is below its smallest achievable value.

    The message names each such limit with the minimum (and its share of fp32); ``.minimum``
    holds the minimum of every limited metric.
    """
    minimum, bad = {}, []
    for l in limits:
        m = min_cost(layers, choices, l.metric, cm)
        minimum[l.metric] = m
        if m > l.bound * (1 + 1e-9) + 1e-12:
            bad.append(l)
    if bad:
        parts = [f"{l.text} is below the smallest achievable {l.metric}={cm.describe(l.metric, minimum[l.metric])}"
                 for l in bad]
        raise InfeasibleBudget("infeasible budget: " + "; ".join(parts), minimum)


def verify(policy: Policy, layers, choices, ties, limits: Limits, cm: CostModel) -> None:
    """Re-check a solver's answer; a violation is a bug in the allocator, never returned."""
    pol = policy.as_dict()
    for l in layers:
        if pol.get(l.name) not in choices[l.name]:
            raise AssertionError(f"allocator chose {pol.get(l.name)} for {l.name}, not in its choices")
    for g in ties:
        if len({pol[n] for n in g}) != 1:
            raise AssertionError(f"allocator broke the tie {g}")
    bad = cm.violations(policy, limits, tol=1e-6)
    if bad:
        raise AssertionError(f"allocator returned a policy violating {', '.join(bad)}")


_REGISTRY: Registry[Callable[..., Allocator]] = Registry("allocator", {
    "ilp": "autocomp.allocators.ilp:ILPAllocator",
    "dp": "autocomp.allocators.dp:DPAllocator",
})


def register(name: str, factory: str | Callable[..., Allocator]) -> None:
    """Register an allocator under ``name`` (a class, or ``"module:Class"`` imported lazily)."""
    _REGISTRY.register(name, factory)


def list_allocators() -> list[str]:
    return _REGISTRY.names()


def get_allocator(name: str, **options: Any) -> Allocator:
    """Build allocator ``name``; an unknown name is one :class:`AutocompError` line."""
    return _REGISTRY.get(name)(**options)
