"""Fronts from what the study database holds (never from memory), as rows for tables and JSON.

A point carries its quality under ``quality`` with the metric's name in ``quality_metric`` (and
under that name too, so accuracy studies keep their ``accuracy`` key), and one key per reported
cost metric (:mod:`autocomp.costs`). Dominance asks the quality metric for its direction, so a
perplexity or a loss front is computed as correctly as an accuracy one.

Example:
    >>> from autocomp.report import pareto
    >>> pts = [{"quality": 9.0, "quality_metric": "perplexity", "size": 2.0},
    ...        {"quality": 8.0, "quality_metric": "perplexity", "size": 3.0},
    ...        {"quality": 9.5, "quality_metric": "perplexity", "size": 3.0}]
    >>> [p["quality"] for p in pareto(pts, ["size"])]
    [9.0, 8.0]
"""
from __future__ import annotations

from typing import Any, Sequence

from autocomp.costs import reported_metrics
from autocomp.errors import AutocompError
from autocomp.metrics import QualityMetric, get_quality_metric
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

_EXTRAS = ("latency_ms", "speedup", "kernel_max_rel_err", "device")


def quality(point: dict) -> float:
    """A point's quality (hand-made points holding only ``accuracy`` are accuracy points)."""
    return point["quality"] if "quality" in point else point["accuracy"]


def quality_metric(points: Sequence[dict]) -> QualityMetric:
    """The quality metric of ``points`` (accuracy when they do not say)."""
    return get_quality_metric(points[0].get("quality_metric", "accuracy") if points else "accuracy")


def change_vs_fp32(point: dict, points: Sequence[dict]) -> str:
    """``point``'s quality change against the fp32 baseline among ``points``, signed as measured
    (a perplexity rising is a loss, an accuracy falling is one), e.g. ``+0.412 (+3.1%)``; ``-``
    when ``points`` hold no fp32 baseline.

    Example:
        >>> pts = [{"quality": 10.0, "source": "fp32"}, {"quality": 10.5, "source": "ilp"}]
        >>> change_vs_fp32(pts[1], pts)
        '+0.5000 (+5.0%)'
    """
    ref = next((quality(p) for p in points if p.get("source") == "fp32"), None)
    if ref is None:
        return "-"
    d = quality(point) - ref
    return f"{d:+.4f}" + (f" ({100 * d / abs(ref):+.1f}%)" if ref else "")


def dominates(a: dict, b: dict, costs: Sequence[str], metric: QualityMetric | None = None) -> bool:
    """``a`` is no worse than ``b`` everywhere (quality in its direction, costs down) and better
    somewhere."""
    metric = metric or quality_metric([a])
    qa, qb = quality(a), quality(b)
    ge = metric.no_worse(qa, qb) and all(a[c] <= b[c] for c in costs)
    gt = metric.better(qa, qb) or any(a[c] < b[c] for c in costs)
    return ge and gt


def pareto(points: Sequence[dict], costs: Sequence[str], metric: QualityMetric | None = None) -> list[dict]:
    """Non-dominated points; among exact duplicates in every objective the first is kept."""
    metric = metric or quality_metric(points)
    out = []
    for p in points:
        if any(dominates(q, p, costs, metric) for q in points if q is not p):
            continue
        if any(quality(p) == quality(q) and all(p[k] == q[k] for k in costs) for q in out):
            continue
        out.append(p)
    return sorted(out, key=lambda p: tuple(p[c] for c in costs))


FRONT_KINDS = ("ptq", "qat", "nas")   # the evaluation families a front merges


def kind_family(kind: str, study: StudyInfo | None = None) -> str | None:
    """The family of a stored evaluation kind: ``ptq`` (the study's own quantizer), ``qat``
    (``qat``, ``qat:<options hash>``), ``nas``; None for the rest (interaction probes, other
    quantizers' PTQ).

    Example:
        >>> kind_family("qat:ba4a0b5f5b"), kind_family("nas"), kind_family("interaction")
        ('qat', 'nas', None)
    """
    from autocomp.store.repository import ptq_kind

    own = ptq_kind((study.config if study else {}).get("quantizer"))
    if kind == own:
        return "ptq"
    head = kind.split(":", 1)[0]
    return head if head in ("qat", "nas") else None


def study_points(store: Store, study: StudyInfo, kind: str | None = "ptq") -> list[dict[str, Any]]:
    """Every evaluated policy of the study joined with its stored costs and provenance.

    ``kind`` picks the evaluations: ``ptq`` (the search's), ``qat`` (QAT refinement and
    ``--trials qat`` trials), ``nas``, or None (all three). Where a policy has several of them,
    its point is the best quality (in the metric's direction; a tie keeps the earlier family),
    with ``kind`` naming the family; a non-PTQ point also carries ``evaluation_kind`` (as
    stored), ``ptq_quality`` (when the policy has a PTQ evaluation) and ``trial_options`` (a QAT
    trial's evaluator options).

    An evaluation stored at costs of its own (a QAT trial's salient weights counted,
    :mod:`autocomp.salient`) is a point of its own at those costs, marked ``own_costs``, beside
    the policy's point at the policy's costs: the two are different models.
    """
    want = FRONT_KINDS if kind is None else (kind,)
    if any(k not in FRONT_KINDS for k in want):
        raise AutocompError(f"unknown evaluation kind {kind!r}: use {', '.join(FRONT_KINDS)}")
    pols = {p.policy_id: p for p in store.list_policies(study)}
    fp = store.get_study(study.name).config.get("fp32", {})
    metrics = reported_metrics()
    rows = store.list_evaluations(study, kind="ptq") if want == ("ptq",) else [
        e for e in store.list_evaluations(study, kind=None) if kind_family(e.kind, study) in want]
    best: dict[tuple, tuple[str, Any]] = {}
    ptq: dict[str, float] = {}
    for e in sorted(rows, key=lambda e: FRONT_KINDS.index(kind_family(e.kind, study))):
        fam = kind_family(e.kind, study)
        if fam == "ptq":
            ptq[e.policy_id] = e.quality
        p = pols.get(e.policy_id)
        key = (e.policy_id, _own_costs(e.metrics().costs, p.costs if p else {}, metrics))
        held = best.get(key)
        if held is None or get_quality_metric(e.quality_metric).better(e.quality, held[1].quality):
            best[key] = (fam, e)
    out = []
    for (_, own), (fam, e) in best.items():
        p = pols.get(e.policy_id)
        if p is None:
            continue
        costs = e.metrics().costs
        pt = {"policy_id": e.policy_id, "source": p.source, "label": p.label,
              "baseline": p.source in ("uniform", "fp32"), e.quality_metric: e.quality,
              "quality": e.quality, "quality_metric": e.quality_metric}
        for m in metrics:
            pt[m.name] = costs[m.name] if costs.get(m.name) is not None else p.costs.get(m.name)
        for m in metrics:
            if m.percent and fp.get(m.name) and pt[m.name] is not None:
                pt[f"{m.name}_rel"] = pt[m.name] / fp[m.name]
        for k in _EXTRAS:
            if k in e.extra:
                pt[k] = e.extra[k]
        pt["kind"] = fam
        if own:
            pt["own_costs"] = True
        if fam != "ptq":
            pt["evaluation_kind"] = e.kind
            if e.policy_id in ptq:
                pt["ptq_quality"] = ptq[e.policy_id]
            if "qat_options" in e.extra:
                pt["trial_options"] = e.extra["qat_options"]
        out.append(pt)
    return out


def _own_costs(stored: dict, policy: dict, metrics: Sequence) -> tuple:
    """The costs an evaluation was stored at where they differ from its policy's (a QAT trial
    keeping salient weights, :mod:`autocomp.salient`), as a key; ``()`` when they are the policy's."""
    own = tuple((m.name, stored[m.name]) for m in metrics
                if stored.get(m.name) is not None and policy.get(m.name) is not None
                and abs(stored[m.name] - policy[m.name]) > 1e-9 * max(1.0, abs(policy[m.name])))
    return own


def front(store: Store, study: StudyInfo, costs: Sequence[str] | None = None,
          kind: str | None = None) -> list[dict[str, Any]]:
    """The study's front: non-dominated searched policies, plus the baselines marked as such.

    Each point carries ``on_front`` (non-dominated among searched policies), ``baseline`` and
    ``kind``. ``kind`` None (default) merges every evaluation family (PTQ, QAT trials, NAS),
    each policy at its best quality (:func:`study_points`); ``"ptq"`` gives the PTQ front alone
    (what the sweep's weights reach), ``"qat"``/``"nas"`` those trials alone.
    """
    cfg = store.get_study(study.name).config
    costs = list(costs or cfg.get("front_costs") or ["size"])
    pts = study_points(store, study, kind)
    metric = quality_metric(pts)
    searched = [p for p in pts if not p["baseline"]]
    fr = pareto(searched, costs, metric)
    ids = {p["policy_id"] for p in fr}
    base = sorted((p for p in pts if p["baseline"]), key=lambda p: -(p["size"] or 0))
    for p in fr:
        p["on_front"] = True
    for p in base:
        p["on_front"] = not any(dominates(q, p, costs, metric) for q in searched)
    return [*fr, *base] if ids or base else []
