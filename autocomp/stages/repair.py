"""Stage ``repair``: measure the chosen policy's neighbours and keep what the measurement prefers.

The allocator trusts its prediction (additive omegas, plus pairwise terms with
``--interactions``); where the prediction is wrong, a neighbouring policy measures better. Start
from the study's best-quality searched policy within the budget (what a user would take). A
*neighbour* moves one layer (one tie group) one choice up or down its allowed choices ordered by
the budget's first metric, and stays within every limit. Each round measures the neighbours not
measured yet, most promising by the prediction first, while the budget of ``max_evals`` measured
neighbours lasts; the best measured
neighbour replaces the policy when it measures strictly better (greedy hill-climbing), else the
repair stops. Every neighbour is stored like any candidate (source ``repair``, a PTQ evaluation),
so the front sees them; ``disagreements`` counts neighbours measured better than the policy they
left although predicted worse - the cases the repair exists for. Decisions depend only on stored
evaluations, so a re-run evaluates nothing new and ends on the same policy.

Example:
    >>> res = repair(store, study, ctx, sens, max_evals=8, pairwise=it.pairwise(sens))   # doctest: +SKIP
    >>> res.start, res.final, res.evaluated                                             # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from autocomp.errors import AutocompError
from autocomp.interactions import PairTerms
from autocomp.metrics import get_quality_metric
from autocomp.policy import Policy
from autocomp.sensitivity import Sensitivity
from autocomp.stages.context import StudyContext
from autocomp.stages.evaluate import evaluate, pending
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

SOURCE = "repair"
_NOT_SEARCHED = ("uniform", "fp32")


@dataclass
class RepairResult:
    """Where the repair started and ended (policy ids), and what it spent.

    Attributes:
        steps: accepted moves in order: ``{"from", "to", "quality", "predicted"}``.
        disagreements: neighbours measured better than their origin though predicted worse.
    """

    start: str
    final: str
    start_quality: float
    final_quality: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    evaluated: int = 0
    measured: int = 0
    disagreements: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_repair(n: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise AutocompError(f"--repair must be a number of evaluations, 0 or more (got {n!r})")


def predicted(sens: Sensitivity, policy: Policy, pairwise: PairTerms | None = None) -> float:
    """The allocator's objective for ``policy``: summed omega plus the pairwise terms it meets."""
    out = sens.predict(policy)
    pol = policy.as_dict()
    for (a, b), row in (pairwise or {}).items():
        if a in pol and b in pol:
            out += row.get((pol[a].key, pol[b].key), 0.0)
    return out


def neighbours(ctx: StudyContext, policy: Policy) -> list[Policy]:
    """Each tie unit one allowed choice up or down (ordered by the first limit's metric), within
    every limit of the budget."""
    layers = list(ctx.layers)
    resolved = ctx.space.resolved_choices(layers)
    metric = ctx.limits.primary.metric
    by_name = {l.name: l for l in layers}
    pol = policy.as_dict()
    out, seen = [], {policy.id}
    for unit in resolved.units():
        cs = resolved.choices[unit[0]]
        order = sorted(cs, key=lambda c: (sum(ctx.cm.layer_cost(metric, by_name[n], c) for n in unit), c.key))
        if pol[unit[0]] not in order:
            continue
        i = order.index(pol[unit[0]])
        for j in (i - 1, i + 1):
            if 0 <= j < len(order):
                p = Policy.from_choices([(n, order[j] if n in unit else c) for n, c in policy.layers])
                if p.id not in seen and not ctx.cm.violations(p, ctx.limits):
                    seen.add(p.id)
                    out.append(p)
    return out


def start_policy(store: Store, study: StudyInfo, ctx: StudyContext) -> Policy:
    """The best-quality searched policy within the budget (ties: the cheaper by the first metric);
    earlier repairs' policies are not searched ones, so a re-run starts where the first run did."""
    key = get_quality_metric(ctx.quality).key
    metric = ctx.limits.primary.metric
    pols = {p.policy_id: p for p in store.list_policies(study) if p.source not in (*_NOT_SEARCHED, SOURCE)}
    best = None
    for e in store.list_evaluations(study):
        if e.policy_id not in pols:
            continue
        pol = Policy.from_dict(pols[e.policy_id].policy)
        if ctx.cm.violations(pol, ctx.limits):
            continue
        rank = (key(e.quality), ctx.cm.cost(metric, pol), pol.id)
        if best is None or rank < best[0]:
            best = (rank, pol)
    if best is None:
        raise AutocompError(f"study {study.name!r} has no evaluated searched policy within the budget to repair")
    return best[1]


def repair(store: Store, study: StudyInfo, ctx: StudyContext, sens: Sensitivity, max_evals: int,
           pairwise: PairTerms | None = None, start: Policy | None = None, workers: int | None = None,
           on_progress: Callable[[int], None] | None = None,
           options: Mapping[str, Any] | None = None) -> RepairResult:
    """Hill-climb from ``start`` (default :func:`start_policy`) on measured quality, spending at
    most ``max_evals`` neighbours (so at most that many new evaluations); stores the result
    (``repair_result`` in the study config). ``options``: the PTQ evaluator's, as the search's.

    Raises:
        IncompleteRun: an evaluation failed; what landed is stored.
    """
    from autocomp.workers.pool import EvaluatorPool

    check_repair(max_evals)
    metric = get_quality_metric(ctx.quality)
    cur = start or start_policy(store, study, ctx)
    pool = None
    try:
        def measure(pols: list[Policy]) -> dict[str, float]:
            nonlocal pool
            if pool is None and pending(store, study, pols):
                pool = EvaluatorPool(ctx.spec, "ptq", options, workers=workers)
            done = evaluate(store, study, ctx.spec, ctx.cm, pols, pool=pool, on_progress=on_progress)
            result.evaluated += done.evaluated
            return {e.policy_id: e.quality for e in store.list_evaluations(study)}

        result = RepairResult(cur.id, cur.id, 0.0, 0.0)
        tried: set[str] = {cur.id}
        q = measure([cur])
        result.start_quality = result.final_quality = q[cur.id]
        while True:
            cands = sorted(neighbours(ctx, cur), key=lambda p: (predicted(sens, p, pairwise), p.id))
            # The budget counts neighbours measured, stored before or not: a re-run replays the
            # same moves on stored results and evaluates nothing.
            todo = [p for p in cands if p.id not in tried][:max_evals - result.measured]
            if not todo:
                break
            tried.update(p.id for p in todo)
            result.measured += len(todo)
            for p in todo:
                store.save_policy(study, p, SOURCE, f"repair of {cur.id[:8]}", ctx.cm.costs(p),
                                  {"from": cur.id, "predicted": predicted(sens, p, pairwise)})
            q = measure(todo)
            here = predicted(sens, cur, pairwise)
            result.disagreements += sum(1 for p in todo if metric.better(q[p.id], q[cur.id])
                                        and predicted(sens, p, pairwise) > here)
            best = min(todo, key=lambda p: (metric.key(q[p.id]), ctx.cm.cost(ctx.limits.primary.metric, p), p.id))
            if not metric.better(q[best.id], q[cur.id]):
                break
            result.steps.append({"from": cur.id, "to": best.id, "quality": q[best.id],
                                 "predicted": predicted(sens, best, pairwise)})
            cur = best
            result.final, result.final_quality = cur.id, q[cur.id]
    finally:
        if pool is not None:
            pool.close()
    store.update_config(study, repair_result=result.to_dict())
    return result
