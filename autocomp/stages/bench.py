"""Stage ``bench``: a proxy bench -- measured policies plus the primitives proxies are built from.

``N`` policies are sampled (a third spread over the budget range by
:func:`autocomp.audit.sample_policies`, the rest :func:`autocomp.audit.band_mates` of those, so
that each cost band holds several policies of about the same cost: MQ-Bench-101's layout),
evaluated with PTQ on the warm evaluator pool and stored as the study's evaluations. Per layer,
the primitives (:mod:`autocomp.proxies.evolved.primitives`: Hessian trace, Fisher, saliencies,
weight and activation statistics, the compression error per choice) are stored as record
``primitives``, and the source proxies' sensitivities under their names. The same study resumes:
stored evaluations, sensitivities and primitives are reused, nothing is recomputed.

Example:
    >>> from autocomp.stages.bench import BenchConfig, load_bench, run_bench
    >>> run_bench(BenchConfig(model="digits", samples=40), Store("sqlite:///b.db"), "bench-digits")   # doctest: +SKIP
    >>> bench = load_bench(Store("sqlite:///b.db"), "bench-digits")                                   # doctest: +SKIP
    >>> len(bench.policies), sorted(bench.primitives.layer)[:2]                                       # doctest: +SKIP
    (40, ['act_range', 'act_sq'])
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.progress import Stages
from autocomp.sensitivity import Sensitivity
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

PRIMITIVES_KEY = "primitives"


@dataclass
class BenchConfig:
    """What a bench samples and measures."""

    model: str = "digits"
    samples: int = 40
    space: str = "mixed_precision"
    seed: int = 0
    workers: int | None = None
    address: str | None = None
    band_tol: float = 0.05
    band_metric: str = "size"
    compare: tuple[str, ...] = ()    # further hand-designed proxies scored for comparison

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compare"] = list(self.compare)
        return d


@dataclass
class Bench:
    """A stored bench as plain values: the sampled policies (fp32 left out) with their measured
    drop against fp32 (in the metric's direction: larger is worse) and band cost, the
    primitives, and every stored sensitivity by proxy name."""

    study: StudyInfo
    policies: list[Policy]
    drops: list[float]
    costs: list[float]
    primitives: Any
    sensitivities: dict[str, Sensitivity] = field(default_factory=dict)
    band_tol: float = 0.05
    layers: list = field(default_factory=list)
    space: str = "mixed_precision"


def bench_policies(layers: Sequence, space, cm, n: int, seed: int = 0, tol: float = 0.05,
                   metric: str = "size") -> list[Policy]:
    """``n`` distinct policies: a third spread over the cost range, the rest band mates of those.

    Example:
        >>> pols = bench_policies(layers, space, cm, 12)     # doctest: +SKIP
    """
    from autocomp.audit import band_mates, sample_policies

    anchors = sample_policies(layers, space, max(2, math.ceil(n / 3)), seed)[:n]
    per = math.ceil((n - len(anchors)) / len(anchors)) if n > len(anchors) else 0
    rng = random.Random(seed + 1)
    out, seen = list(anchors), {p.id for p in anchors}
    for a in anchors:
        for m in band_mates(layers, space, cm, a, per, tol, metric, rng):
            if m.id not in seen and len(out) < n:
                seen.add(m.id)
                out.append(m)
    return out


def run_bench(cfg: BenchConfig, store: Store, study_name: str, stages: Stages | None = None) -> dict[str, Any]:
    """Sample, evaluate (what is missing), score the primitives' sources (what is missing) and
    store it all in study ``study_name``; returns counts of what this call did."""
    from autocomp.audit import check_bands
    from autocomp.proxies import get_proxy
    from autocomp.proxies.evolved.primitives import (CHOICE, NAMES, SOURCE_OPTIONS, from_sources, local_primitives,
                                                     sources_for)
    from autocomp.search_spaces import load_space
    from autocomp.stages import evaluate
    from autocomp.stages.profile import load_profiled
    from autocomp.store.repository import check_study_name, ptq_kind
    from autocomp.workers.proxy_tasks import score_on_ray
    from autocomp.workers.session import ensure_ray

    stages = stages or Stages()
    check_study_name(study_name)
    if cfg.samples < 4:
        raise AutocompError("--samples must be at least 4 (a cost band needs three policies)")
    if cfg.workers is not None and cfg.workers < 1:
        raise AutocompError("--workers must be at least 1")
    check_bands(cfg.band_tol, 0, cfg.band_metric)
    compare = [p for p in cfg.compare if p not in sources_for(NAMES)]
    for p in compare:
        get_proxy(p)                                    # unknown names fail before any work
    existing = store.get_study(study_name, missing_ok=True)
    if existing is not None and existing.config.get("kind") != "bench":
        raise AutocompError(f"study {study_name!r} is not a proxy bench: pass another --study")
    if existing is not None and existing.config.get("model") != cfg.model:
        raise AutocompError(f"study {study_name!r} holds model {existing.config.get('model')!r}, not {cfg.model!r}")
    space = load_space(cfg.space)
    wl, model, layers, cm = load_profiled(cfg.model, space, stages)
    study, _ = store.open_study(study_name, {"model": cfg.model, "kind": "bench", "bench": cfg.to_dict()})
    if not store.load_layers(study):
        store.save_layers(study, layers)
    ensure_ray(cfg.address, num_cpus=cfg.workers, model=cfg.model)

    fp32 = Policy.uniform([l.name for l in layers], Choice(32, 32, 0.0))
    policies = bench_policies(layers, space, cm, cfg.samples, cfg.seed, cfg.band_tol, cfg.band_metric)
    for p in [fp32, *policies]:
        store.save_policy(study, p, "fp32" if p is fp32 else "bench", "fp32" if p is fp32 else "bench sample",
                          cm.costs(p))
    todo = [fp32, *policies]
    kind = ptq_kind("rtn")
    missing = len(todo) - len(store.evaluated_ids(study, kind) & {p.id for p in todo})
    with stages.stage("evaluate", missing) as tick:
        evaluate(store, study, cfg.model, cm, todo, "ptq", workers=cfg.workers, on_progress=tick, kind=kind)

    scored = []
    have = set(store.scored_proxies(study))
    for name in [*sources_for(NAMES), *compare]:
        if name in have:
            continue
        with stages.stage(f"proxy {name}", 1) as tick:
            sens = score_on_ray(cfg.model, name, layers, space, dict(SOURCE_OPTIONS.get(name, {})),
                                workers=cfg.workers)
            store.save_sensitivity(study, sens)
            scored.append(name)
            tick()
    stored = store.load_record(study, PRIMITIVES_KEY)
    if stored is None or not set(NAMES) - set(CHOICE) <= {*stored["layer"], *stored["choice"]}:
        with stages.stage("primitives", 1) as tick:
            sens = {n: store.load_sensitivity(study, n) for n in sources_for(NAMES)}
            prims = from_sources(sens, local_primitives(model, layers, wl.calib))
            store.save_record(study, PRIMITIVES_KEY, prims.to_dict())
            tick()
    return {"study": study_name, "policies": len(policies), "evaluated": missing, "scored": scored}


def load_bench(store: Store, study_name: str) -> Bench:
    """The stored bench ``study_name`` (one-line errors when it is not a complete bench)."""
    from autocomp.metrics import get_quality_metric
    from autocomp.proxies.evolved.primitives import Primitives
    from autocomp.store.repository import ptq_kind

    study = store.get_study(study_name, missing_ok=True)
    if study is None or study.config.get("kind") != "bench":
        raise AutocompError(f"no proxy bench {study_name!r} in this database: run `autocomp proxies bench` first")
    raw = store.load_record(study, PRIMITIVES_KEY)
    if raw is None:
        raise AutocompError(f"proxy bench {study_name!r} is incomplete: run `autocomp proxies bench` on it again")
    cfg = study.config.get("bench", {})
    metric = cfg.get("band_metric", "size")
    evals = {e.policy_id: e for e in store.list_evaluations(study, ptq_kind("rtn"))}
    infos = store.list_policies(study)
    fp32 = next((p for p in infos if p.source == "fp32"), None)
    if fp32 is None or fp32.policy_id not in evals:
        raise AutocompError(f"proxy bench {study_name!r} is incomplete: run `autocomp proxies bench` on it again")
    base = evals[fp32.policy_id]
    sign = 1.0 if get_quality_metric(base.quality_metric).higher_is_better else -1.0
    pols, drops, costs = [], [], []
    for p in infos:
        if p.source == "bench" and p.policy_id in evals:
            pols.append(Policy.from_dict(p.policy))
            drops.append(sign * (base.quality - evals[p.policy_id].quality))
            costs.append(float(p.costs[metric]))
    sens = {n: store.load_sensitivity(study, n) for n in store.scored_proxies(study)}
    return Bench(study, pols, drops, costs, Primitives.from_dict(raw), sens, float(cfg.get("band_tol", 0.05)),
                 store.load_layers(study), str(cfg.get("space", "mixed_precision")))
