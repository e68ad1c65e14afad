"""Comparing fronts: two studies side by side, and the hypervolume that ranks them.

Hypervolume is measured in (accuracy, cost / fp32 cost) space against the reference point
(accuracy 0, every cost at 100 % of fp32): the area (volume) a front dominates. Larger is better;
two studies of one model are comparable, two models are not.

Example:
    >>> from autocomp.compare import hypervolume
    >>> hypervolume([{"accuracy": 0.9, "size": 50.0}], ["size"], {"size": 100.0})
    0.45
"""
from __future__ import annotations

from typing import Any, Sequence

from autocomp.report import front
from autocomp.store import Store


def _normalised(points: Sequence[dict], costs: Sequence[str], fp32: dict) -> list[list[float]]:
    """Minimisation vectors (-accuracy, cost/fp32, ...); costs without an fp32 reference stay raw."""
    rows = []
    for p in points:
        if any(p.get(c) is None for c in costs):
            continue
        rows.append([-float(p["accuracy"]), *(float(p[c]) / fp32[c] if fp32.get(c) else float(p[c]) for c in costs)])
    return rows


def hypervolume(points: Sequence[dict], costs: Sequence[str], fp32: dict,
                reference: Sequence[float] | None = None) -> float:
    """Volume dominated by ``points`` (dicts with ``accuracy`` and each cost) up to ``reference``.

    Args:
        points: any points; dominated ones add nothing.
        costs: the cost keys (minimised).
        fp32: the fp32 cost of each key; costs are divided by it.
        reference: in the normalised minimisation space; default ``(0, 1, 1, ...)``.
    """
    ref = list(reference) if reference is not None else [0.0] + [1.0] * len(costs)
    rows = [r for r in _normalised(points, costs, fp32) if all(v < b for v, b in zip(r, ref))]
    if not rows:
        return 0.0
    if len(ref) == 2:  # exact sweep: sort by cost, keep the running best accuracy
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
    studies with different budgets compare on one footing.
    """
    store_b = store_b or store_a
    sa, sb = store_a.get_study(a), store_b.get_study(b)
    costs = list(costs or sa.config.get("front_costs") or ["size"])
    out: dict[str, Any] = {"costs": costs, "studies": []}
    for store, st in ((store_a, sa), (store_b, sb)):
        pts = front(store, st, costs)
        searched = [p for p in pts if not p["baseline"]]
        fp32 = st.config.get("fp32", {})
        out["studies"].append({
            "name": st.name, "model": st.config.get("model"), "budget": st.config.get("budget_text"),
            "proxy": st.config.get("proxy"), "space": st.config.get("space"), "fp32": fp32, "points": pts,
            "front_size": len(searched), "hypervolume": hypervolume(searched, costs, fp32),
            "best_accuracy": max((p["accuracy"] for p in searched), default=None),
        })
    return out
