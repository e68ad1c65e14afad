"""Comparing fronts: two studies side by side, and the hypervolume that ranks them.

Hypervolume is measured in (quality, cost / fp32 cost) space, every objective turned to be
minimised (a higher-is-better quality is negated), against a reference point at every cost at
100 % of fp32 and the quality at its worst: 0 for a higher-is-better metric such as accuracy,
the worst value seen for a lower-is-better one such as perplexity (no natural worst exists).
Larger is better; two studies of one model are comparable, two models are not.

Example:
    >>> from autocomp.compare import hypervolume
    >>> hypervolume([{"accuracy": 0.9, "size": 50.0}], ["size"], {"size": 100.0})
    0.45
    >>> pts = [{"quality": 12.0, "quality_metric": "perplexity", "size": 50.0},
    ...        {"quality": 20.0, "quality_metric": "perplexity", "size": 25.0}]
    >>> hypervolume(pts, ["size"], {"size": 100.0})   # (20 - 12) x (1 - 0.5)
    4.0
"""
from __future__ import annotations

from typing import Any, Sequence

from autocomp.metrics import QualityMetric
from autocomp.report import front, quality, quality_metric
from autocomp.store import Store


def _normalised(points: Sequence[dict], costs: Sequence[str], fp32: dict, metric: QualityMetric) -> list[list[float]]:
    """Minimisation vectors (quality as a key, cost/fp32, ...); costs without an fp32 reference
    stay raw."""
    rows = []
    for p in points:
        if any(p.get(c) is None for c in costs):
            continue
        rows.append([metric.key(float(quality(p))),
                     *(float(p[c]) / fp32[c] if fp32.get(c) else float(p[c]) for c in costs)])
    return rows


def reference_quality(points: Sequence[dict], metric: QualityMetric) -> float:
    """The reference point's quality coordinate (minimisation space): 0 for a higher-is-better
    metric, the worst quality of ``points`` for a lower-is-better one."""
    if metric.higher_is_better:
        return 0.0
    return max((metric.key(float(quality(p))) for p in points), default=0.0)


def hypervolume(points: Sequence[dict], costs: Sequence[str], fp32: dict,
                reference: Sequence[float] | None = None, metric: QualityMetric | None = None) -> float:
    """Volume dominated by ``points`` (dicts with their quality and each cost) up to ``reference``.

    Args:
        points: any points; dominated ones add nothing.
        costs: the cost keys (minimised).
        fp32: the fp32 cost of each key; costs are divided by it.
        reference: in the normalised minimisation space; default
            ``(reference_quality(points), 1, 1, ...)``.
        metric: the quality metric (default: the points' ``quality_metric``, else accuracy).
    """
    metric = metric or quality_metric(points)
    ref = list(reference) if reference is not None else [reference_quality(points, metric)] + [1.0] * len(costs)
    rows = [r for r in _normalised(points, costs, fp32, metric) if all(v < b for v, b in zip(r, ref))]
    if not rows:
        return 0.0
    if len(ref) == 2:  # exact sweep: sort by cost, keep the running best quality
        rows.sort(key=lambda r: (r[1], r[0]))
        hv, best = 0.0, ref[0]
        for i, (a, c) in enumerate(rows):
            best = min(best, a)
            nxt = rows[i + 1][1] if i + 1 < len(rows) else ref[1]
            hv += (ref[0] - best) * (nxt - c)
        return float(round(hv, 12))
    import numpy as np
    from optuna._hypervolume import compute_hypervolume  # WFG, exact in any dimension

    return float(compute_hypervolume(np.asarray(rows), np.asarray(ref)))


def compare_studies(store_a: Store, a: str, b: str, store_b: Store | None = None,
                    costs: Sequence[str] | None = None) -> dict[str, Any]:
    """Both fronts (table rows), their hypervolumes and the shared costs.

    Costs default to the first study's budgeted costs; both fronts are recomputed on them, so
    studies with different budgets compare on one footing; for a lower-is-better quality both
    hypervolumes share one reference (the worst quality of either front).
    """
    store_b = store_b or store_a
    sa, sb = store_a.get_study(a), store_b.get_study(b)
    costs = list(costs or sa.config.get("front_costs") or ["size"])
    fronts = [(st, front(store, st, costs)) for store, st in ((store_a, sa), (store_b, sb))]
    metric = quality_metric(next((pts for _, pts in fronts if pts), []))
    searched = [[p for p in pts if not p["baseline"]] for _, pts in fronts]
    ref_q = reference_quality([p for s in searched for p in s], metric)
    out: dict[str, Any] = {"costs": costs, "quality_metric": metric.name, "studies": []}
    for (st, pts), found in zip(fronts, searched):
        fp32 = st.config.get("fp32", {})
        best = min((quality(p) for p in found), key=metric.key, default=None)
        out["studies"].append({
            "name": st.name, "model": st.config.get("model"), "budget": st.config.get("budget_text"),
            "proxy": st.config.get("proxy"), "space": st.config.get("space"), "fp32": fp32, "points": pts,
            "front_size": len(found),
            "hypervolume": hypervolume(found, costs, fp32, [ref_q] + [1.0] * len(costs), metric),
            "quality_metric": metric.name, "best_quality": best, f"best_{metric.name}": best,
        })
    return out
