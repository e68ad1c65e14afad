"""Stage ``target``: the cheapest policy meeting a quality target, by bisection on the budget.

Each probe solves the allocator at a bound on the metric to minimise, stores the policy (source
``target``) and evaluates it; the bracket keeps the cheapest passing policy and the failing bound
below it. The bisection starts from the mildest policy (the allocator at the upper bound: the
budget's bound on that metric, else fp32's cost; should that fail the target, the space's uniform
highest-bit policy - every layer at its least aggressive choice - where it fits) and stops when the bracket is narrower than
``tol`` x fp32's cost or ``max_evals`` probes are spent. Every decision depends only on stored
evaluations (looked up by policy id), so a re-run evaluates nothing and ends on the same answer.

Example:
    >>> res = seek_target(store, study, ctx, sens, parse_target("drop<=1%"), "size", workers=2)   # doctest: +SKIP
    >>> res.answer["policy_id"], res.bracket["fail"]                                           # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from autocomp.allocators import Allocation, get_allocator
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.interactions import PairTerms, aggressiveness
from autocomp.metrics import get_quality_metric
from autocomp.policy import Choice, Policy
from autocomp.sensitivity import Sensitivity
from autocomp.stages.context import StudyContext
from autocomp.stages.evaluate import evaluate, pending
from autocomp.store import Store
from autocomp.store.repository import StudyInfo
from autocomp.target import Target


@dataclass
class TargetResult:
    """What :func:`seek_target` found (``to_dict`` is what the study config stores).

    Attributes:
        answer: the cheapest probe meeting the target (``policy_id``, ``quality``, ``cost``, ``bound``).
        bracket: ``pass`` (= the answer), ``fail`` (the costliest failing probe cheaper than it, or
            None), ``lo``/``hi`` (the bisection's final bounds) and ``width`` (hi - lo, share of fp32).
        probes: every probe in order (fp32 reference not included).
        stopped: ``tolerance`` or ``max_evals``.
        reachable: False when even the mildest policy missed the target (then only that probe).
    """

    target: str
    threshold: float
    quality_metric: str
    reference: float
    minimise: str
    answer: dict[str, Any]
    bracket: dict[str, Any]
    probes: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = "tolerance"
    reachable: bool = True
    evaluated: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "threshold": self.threshold, "quality_metric": self.quality_metric,
                "reference": self.reference, "minimise": self.minimise, "answer": self.answer,
                "bracket": self.bracket, "probes": self.probes, "stopped": self.stopped,
                "reachable": self.reachable}


class _Prober:
    """Stores, evaluates (one pool, started only when something is missing) and judges probes."""

    def __init__(self, store: Store, study: StudyInfo, ctx: StudyContext, workers: int | None,
                 options: dict[str, Any] | None = None):
        self.store, self.study, self.ctx, self.workers, self.options = store, study, ctx, workers, options
        self.pool: Any = None
        self.evaluated = self.skipped = 0

    def quality(self, policies: list[Policy]) -> list[float]:
        from autocomp.workers.pool import EvaluatorPool

        if self.pool is None and pending(self.store, self.study, policies):
            self.pool = EvaluatorPool(self.ctx.spec, "ptq", self.options, workers=self.workers)
        done = evaluate(self.store, self.study, self.ctx.spec, self.ctx.cm, policies, pool=self.pool)
        self.evaluated += done.evaluated
        self.skipped += done.skipped
        stored = {e.policy_id: e.quality for e in self.store.list_evaluations(self.study)}
        return [stored[p.id] for p in policies]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def seek_target(store: Store, study: StudyInfo, ctx: StudyContext, sens: Sensitivity, target: Target,
                minimise: str = "size", allocator: str = "ilp", tol: float = 0.02, max_evals: int = 12,
                workers: int | None = None, on_progress: Callable[[int], None] | None = None,
                pairwise: PairTerms | None = None, options: dict[str, Any] | None = None) -> TargetResult:
    """Bisect the allocator's bound on ``minimise`` for the cheapest policy meeting ``target``
    (``pairwise``: measured interaction terms the allocator adds, as in a search; ``options``: the
    PTQ evaluator's, as the search's).

    Stores every probe and the result (``target_result`` in the study config).

    Raises:
        AutocompError: the target is unreachable (even the mildest policy misses it); its
            evaluations and the result (``reachable: false``) stay stored.
        IncompleteRun: an evaluation failed; what landed is stored.
    """
    cm, m, alloc = ctx.cm, minimise, get_allocator(allocator)
    tick = on_progress or (lambda n=1: None)
    target.check(ctx.quality)
    fp32 = Policy.uniform(ctx.names, Choice(32, 32, 0.0))
    store.save_policy(study, fp32, "fp32", "fp32", cm.costs(fp32))

    def solve(bound: float) -> Allocation | None:
        try:
            a = alloc.solve(list(ctx.layers), sens, ctx.space, ctx.limits.with_limit(m, bound), cm, pairwise=pairwise)
        except InfeasibleBudget:
            return None   # no policy of the space fits this bound (with the budget's other limits)
        store.save_policy(study, a.policy, "target", f"target {m}<={cm.format(m, bound)}",
                          cm.costs(a.policy), {"objective": a.objective, "status": a.status,
                                               "budget": a.budget.to_dict()})
        return a

    prober = _Prober(store, study, ctx, workers, options)
    probes: list[dict[str, Any]] = []

    def probe(pol: Policy, bound: float, quality: float) -> dict[str, Any]:
        p = {"policy_id": pol.id, "bound": bound, "cost": cm.cost(m, pol), "quality": quality,
             "passed": target.met(quality, reference, ctx.quality)}
        if p["policy_id"] not in {q["policy_id"] for q in probes}:
            probes.append(p)
            tick(1)
        return p

    try:
        hi = ctx.limits[m] if m in ctx.limits.metrics else cm.fp32(m)
        top = solve(hi)
        if top is None:  # the budget itself is checked feasible by the profile stage
            raise AutocompError(f"no policy fits {ctx.limits.with_limit(m, hi).describe()}")
        reference, q_top = prober.quality([fp32, top.policy])
        threshold = target.threshold(reference, ctx.quality)
        first = probe(top.policy, hi, q_top)
        mild = mildest(ctx)
        if not first["passed"] and mild.id != top.policy.id and not cm.violations(mild, ctx.limits.with_limit(m, hi)):
            store.save_policy(study, mild, "target", "target mildest", cm.costs(mild))
            second = probe(mild, hi, prober.quality([mild])[0])
            # The best achievable value an unreachable target names is the better of the two.
            q_top = min(q_top, second["quality"], key=get_quality_metric(ctx.quality).key)
            first = second if second["passed"] else first
        result = TargetResult(target.text, threshold, ctx.quality, reference, m, {}, {})
        if not first["passed"]:
            result.probes, result.reachable = probes, False
            store.update_config(study, target_result=result.to_dict())
            within = ctx.limits.describe() if m in ctx.limits.metrics else f"{m}<=100%, {ctx.limits.describe()}"
            raise AutocompError(
                f"target {target.text!r} ({target.describe(reference, ctx.quality)}) is unreachable within "
                f"{within}: the best achievable {ctx.quality} is {q_top:.4f} "
                f"(fp32: {reference:.4f}); the evaluations are stored in study {study.name!r}")
        lo, hi = _min_cost(ctx, m), first["cost"]
        width = tol * cm.fp32(m)
        while hi - lo > width:
            if len(probes) >= max_evals:
                result.stopped = "max_evals"
                break
            mid = (lo + hi) / 2
            a = solve(mid)
            if a is None:
                lo = mid
                continue
            p = probe(a.policy, mid, prober.quality([a.policy])[0])
            if p["passed"]:
                hi = min(hi, p["cost"])
            else:
                lo = mid
    finally:
        prober.close()
    passed = sorted((p for p in probes if p["passed"]), key=lambda p: (p["cost"], p["policy_id"]))
    answer = passed[0]
    fails = [p for p in probes if not p["passed"] and p["cost"] < answer["cost"]]
    fail = max(fails, key=lambda p: (p["cost"], p["policy_id"])) if fails else None
    result.answer = answer
    result.bracket = {"pass": answer, "fail": fail, "lo": lo, "hi": hi, "width": (hi - lo) / cm.fp32(m)}
    result.probes, result.evaluated, result.skipped = probes, prober.evaluated, prober.skipped
    store.update_config(study, target_result=result.to_dict())
    return result


def mildest(ctx: StudyContext) -> Policy:
    """The space's uniform highest-bit policy: every layer at its least aggressive allowed choice."""
    choices = ctx.space.choices(list(ctx.layers))
    return Policy.from_choices([(n, max(choices[n], key=aggressiveness)) for n in ctx.names])


def _min_cost(ctx: StudyContext, metric: str) -> float:
    """The smallest ``metric`` any policy of the space reaches (the bisection's lower bound)."""
    choices = ctx.space.choices(list(ctx.layers))
    return ctx.cm.offset(metric) + sum(float(ctx.cm.layer_costs(metric, l, choices[l.name]).min())
                                       for l in ctx.layers)
