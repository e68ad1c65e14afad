"""Fronts from what the study database holds (never from memory), as rows for tables and JSON."""
from __future__ import annotations

from typing import Any, Sequence

from autocomp.store import Store
from autocomp.store.repository import StudyInfo

COSTS = ("size", "bitops", "avg_bits")


def dominates(a: dict, b: dict, costs: Sequence[str]) -> bool:
    """``a`` is no worse than ``b`` everywhere (accuracy up, costs down) and better somewhere."""
    ge = a["accuracy"] >= b["accuracy"] and all(a[c] <= b[c] for c in costs)
    gt = a["accuracy"] > b["accuracy"] or any(a[c] < b[c] for c in costs)
    return ge and gt


def pareto(points: Sequence[dict], costs: Sequence[str]) -> list[dict]:
    """Non-dominated points; among exact duplicates in every objective the first is kept."""
    out = []
    for i, p in enumerate(points):
        if any(dominates(q, p, costs) for q in points if q is not p):
            continue
        if any(all(p[k] == q[k] for k in ("accuracy", *costs)) for q in out):
            continue
        out.append(p)
    return sorted(out, key=lambda p: tuple(p[c] for c in costs))


def study_points(store: Store, study: StudyInfo, kind: str = "ptq") -> list[dict[str, Any]]:
    """Every evaluated policy of the study joined with its stored costs and provenance.

    ``kind`` picks the evaluations: ``ptq`` (the search's) or ``qat`` (QAT refinement trials).
    """
    pols = {p.policy_id: p for p in store.list_policies(study)}
    fp = store.get_study(study.name).config.get("fp32", {})
    out = []
    for e in store.list_evaluations(study, kind=kind):
        p = pols.get(e.policy_id)
        if p is None:
            continue
        pt = {"policy_id": e.policy_id, "source": p.source, "label": p.label,
              "baseline": p.source in ("uniform", "fp32"), "accuracy": e.accuracy,
              "size": e.size if e.size is not None else p.costs.get("size"),
              "bitops": e.bitops if e.bitops is not None else p.costs.get("bitops"),
              "avg_bits": e.avg_bits if e.avg_bits is not None else p.costs.get("avg_bits"),
              "latency": e.latency}
        if fp.get("size"):
            pt["size_rel"] = pt["size"] / fp["size"]
        if fp.get("bitops"):
            pt["bitops_rel"] = pt["bitops"] / fp["bitops"]
        for k in ("latency_ms", "speedup", "kernel_max_rel_err", "device"):
            if k in e.extra:
                pt[k] = e.extra[k]
        out.append(pt)
    return out


def front(store: Store, study: StudyInfo, costs: Sequence[str] | None = None, kind: str = "ptq") -> list[dict[str, Any]]:
    """The study's front: non-dominated searched policies, plus the baselines marked as such.

    Each point carries ``on_front`` (non-dominated among searched policies) and ``baseline``.
    """
    cfg = store.get_study(study.name).config
    costs = list(costs or cfg.get("front_costs") or ["size"])
    pts = study_points(store, study, kind)
    searched = [p for p in pts if not p["baseline"]]
    fr = pareto(searched, costs)
    ids = {p["policy_id"] for p in fr}
    base = sorted((p for p in pts if p["baseline"]), key=lambda p: -(p["size"] or 0))
    for p in fr:
        p["on_front"] = True
    for p in base:
        p["on_front"] = not any(dominates(q, p, costs) for q in searched)
    return [*fr, *base] if ids or base else []
