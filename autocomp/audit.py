"""Proxy audit: how well does each proxy's predicted degradation rank measured accuracy drops?

``K`` policies are sampled across the budget range (from nearly all-high to nearly all-low bits),
evaluated with PTQ on Ray, and every proxy's additive prediction ``sum_l omega(l, c_l)`` is
rank-correlated (Spearman, Kendall) with the measured drop ``acc(fp32) - acc(policy)``. Results
are stored in the study database (``autocomp_proxy_audits``) with the sampled policies.

Per quantizer (``quantizers``, default ``rtn``): the policies are evaluated with each one
(stored as evaluation kind :func:`~autocomp.store.repository.ptq_kind`), a proxy with a
``quantizer`` option scores under each, and the table has a row per (proxy, quantizer). A row
of another quantizer than ``rtn`` is stored under the proxy name ``NAME[SPEC]``.

Example:
    >>> from autocomp.audit import AuditConfig, run_audit
    >>> rows = run_audit(AuditConfig(model="digits", samples=12), Store("sqlite:///a.db"), "audit-digits")  # doctest: +SKIP
    >>> rows[0]["proxy"], rows[0]["spearman"]                                                           # doctest: +SKIP
    >>> cfg = AuditConfig(model="digits", samples=12, quantizers=("rtn", "gptq"))                       # doctest: +SKIP
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.progress import Stages

# Options that keep the slow proxies to a few seconds on small models during an audit.
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "hessian_trace": {"max_probes": 16, "min_probes": 8, "tol": 1e-2},
    "hessian_eig": {"max_iter": 20, "tol": 1e-2},
}


@dataclass
class AuditConfig:
    """What an audit samples and scores."""

    model: str = "digits"
    samples: int = 24
    proxies: tuple[str, ...] = ()          # empty: every registered proxy
    quantizers: tuple[str, ...] = ("rtn",)  # the measured policies are evaluated with each
    space: str = "mixed_precision"
    seed: int = 0
    workers: int | None = None
    address: str | None = None
    data: str = "real"
    options: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(FAST_OPTIONS))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["proxies"] = list(self.proxies)
        d["quantizers"] = list(self.quantizers)
        return d


def audit_key(proxy: str, quantizer: str) -> str:
    """The proxy name an audit row is stored under: the proxy's own with ``rtn``, else ``NAME[SPEC]``.

    Example:
        >>> audit_key("loss_delta", "rtn"), audit_key("loss_delta", "gptq+bias_correction")
        ('loss_delta', 'loss_delta[gptq+bias_correction]')
    """
    return proxy if quantizer == "rtn" else f"{proxy}[{quantizer}]"


def check_quantizers(specs: Sequence[str]) -> tuple[str, ...]:
    """The quantizer specs in one spelling each (``rtn()`` is ``rtn``: the spelling names the
    evaluation kind), without repeats; a bad one is a one-line error.

    Example:
        >>> check_quantizers(["rtn", " rtn()"])
        ('rtn',)
    """
    from autocomp.quantizers import get_quantizer

    if not specs:
        raise AutocompError("--quantizer: give at least one quantizer, e.g. rtn or gptq")
    out = []
    for spec in specs:
        if not str(spec).strip():
            raise AutocompError("--quantizer: an empty quantizer spec")
        out.append(get_quantizer(str(spec).strip()).spec)
    return tuple(dict.fromkeys(out))


def sample_policies(layers: Sequence, space, k: int, seed: int = 0) -> list[Policy]:
    """``k`` distinct policies whose aggressiveness sweeps from the mildest to the harshest choices.

    Policy ``i`` targets position ``t_i = i / (k - 1)`` in each layer's choices ordered by
    effective bits (then activation bits) and jitters every layer around it, so the sample covers
    the whole cost range and still mixes bit-widths across layers.
    """
    if k < 2:
        raise AutocompError("--samples must be at least 2")
    rng = random.Random(seed)
    choices = space.choices(layers)
    ordered = {n: sorted(cs, key=lambda c: (-c.effective_w_bits, -c.a_bits)) for n, cs in choices.items()}
    out: list[Policy] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < k and tries < 50 * k:
        # The first pass sweeps evenly; duplicates (tiny spaces) are replaced by random targets.
        t = tries / (k - 1) if tries < k else rng.random()
        tries += 1
        picks = []
        for l in layers:
            cs = ordered[l.name]
            pos = min(max(t * (len(cs) - 1) + rng.gauss(0.0, 0.6 * max(len(cs) - 1, 1) / 2), 0), len(cs) - 1)
            picks.append((l.name, cs[int(round(pos))]))
        p = Policy.from_choices(picks)
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return out


def rank_correlations(pred: Sequence[float], drop: Sequence[float]) -> tuple[float | None, float | None]:
    """Spearman and Kendall (tau-b); ``None`` when either side is constant."""
    from scipy.stats import kendalltau, spearmanr

    if len(set(pred)) < 2 or len(set(drop)) < 2:
        return None, None
    s = float(spearmanr(pred, drop).statistic)
    k = float(kendalltau(pred, drop).statistic)
    return (s if math.isfinite(s) else None), (k if math.isfinite(k) else None)


def run_audit(cfg: AuditConfig, store, study_name: str, stages: Stages | None = None) -> list[dict[str, Any]]:
    """Sample, evaluate, score and correlate; returns one row per proxy, best Spearman first."""
    from autocomp.budget import CostModel
    from autocomp.profile import model_param_count, profile_model
    from autocomp.proxies import get_proxy, list_proxies
    from autocomp.search_spaces import load_space
    from autocomp.metrics import get_quality_metric
    from autocomp.stages import check_data, evaluate
    from autocomp.workers.proxy_tasks import score_on_ray
    from autocomp.workers.session import ensure_ray
    from autocomp.store.repository import check_study_name, ptq_kind
    from autocomp.workload import load_workload, validate_workload

    stages = stages or Stages()
    check_study_name(study_name)
    if cfg.samples < 2:
        raise AutocompError("--samples must be at least 2 (a rank correlation needs two policies)")
    if cfg.workers is not None and cfg.workers < 1:
        raise AutocompError("--workers must be at least 1")
    existing = store.get_study(study_name, missing_ok=True)
    if existing is not None and existing.config.get("kind") != "audit":
        # an audit's sampled policies must never join a search study's front
        raise AutocompError(f"study {study_name!r} is a search study, not an audit: pass another --study")
    proxies = list(cfg.proxies) or [p for p in list_proxies() if p != "auto"]
    quantizers = check_quantizers(cfg.quantizers)
    aware = set()      # proxies that score with the quantizer that will be used
    for p in proxies:  # unknown names and bad options fail before any work
        if "quantizer" in get_proxy(p, **cfg.options.get(p, {})).config_dict():
            aware.add(p)
            for q in quantizers:
                get_proxy(p, **{**cfg.options.get(p, {}), "quantizer": q})
    space = load_space(cfg.space)
    check_data(cfg.data)
    with stages.stage("load model", 1) as tick:
        wl = load_workload(cfg.model)
        model = validate_workload(wl)
        layers = profile_model(model, wl.sample_input())
        space.check_layers(layers)
        tick()
    cm = CostModel(layers, total_params=model_param_count(model))
    study, _ = store.open_study(study_name, {"model": cfg.model, "kind": "audit", "audit": cfg.to_dict()})
    if study.config.get("model") != cfg.model:
        raise AutocompError(f"study {study_name!r} holds model {study.config.get('model')!r}, not {cfg.model!r}")
    if not store.load_layers(study):
        store.save_layers(study, layers)
    ensure_ray(cfg.address, num_cpus=cfg.workers, model=cfg.model)

    names = [l.name for l in layers]
    fp32 = Policy.uniform(names, Choice(32, 32, 0.0))
    policies = sample_policies(layers, space, cfg.samples, cfg.seed)
    for p in [fp32, *policies]:
        store.save_policy(study, p, "fp32" if p is fp32 else "audit", "fp32" if p is fp32 else "audit sample",
                          cm.costs(p))
    todo = [fp32, *policies]
    # The drop is the degradation against fp32 in the metric's own direction (perplexity up is worse).
    sign = 1.0 if get_quality_metric(wl.quality).higher_is_better else -1.0
    drops: dict[str, list[float]] = {}
    for q in quantizers:
        kind = ptq_kind(q)
        label = "evaluate" if q == "rtn" else f"evaluate {q}"
        with stages.stage(label, len(todo) - len(store.evaluated_ids(study, kind) & {p.id for p in todo})) as tick:
            # rtn keeps the evaluator's defaults: its stored evaluations are those of every earlier audit
            evaluate(store, study, cfg.model, cm, todo, "ptq", options=None if q == "rtn" else {"quantizer": q},
                     workers=cfg.workers, on_progress=tick, kind=kind)
        quality = {e.policy_id: e.quality for e in store.list_evaluations(study, kind)}
        drops[q] = [sign * (quality[fp32.id] - quality[p.id]) for p in policies]

    rows = []
    for name in proxies:
        # A proxy blind to the quantizer is scored once; its prediction meets each quantizer's drops.
        for q in (quantizers if name in aware else quantizers[:1]):
            options = {**cfg.options.get(name, {}), **({"quantizer": q} if name in aware else {})}
            label = name if name not in aware or q == "rtn" else f"{name} under {q}"
            with stages.stage(f"proxy {label}", 1) as tick:
                t0 = time.perf_counter()
                sens = score_on_ray(cfg.model, name, layers, space, options, workers=cfg.workers, data=cfg.data)
                secs = time.perf_counter() - t0
                pred = [sens.predict(p) for p in policies]
                for qq in ([q] if name in aware else quantizers):
                    rho, tau = rank_correlations(pred, drops[qq])
                    row = {"proxy": name, "quantizer": qq, "spearman": rho, "kendall": tau,
                           "samples": len(policies), "seconds": secs, "data": cfg.data}
                    store.save_audit(study, {**row, "proxy": audit_key(name, qq)},
                                     {"predicted": pred, "drops": drops[qq], "policies": [p.id for p in policies],
                                      "quantizer": qq})
                    rows.append(row)
                tick()
    rows.sort(key=lambda r: -(r["spearman"] if r["spearman"] is not None else -2.0))
    store.update_config(study, audit_best=rows[0]["proxy"] if rows else None)
    return rows


def best_proxy(rows: Sequence[dict[str, Any]]) -> str:
    """The proxy with the highest Spearman correlation (Kendall breaks ties), over every quantizer's rows."""
    scored = [r for r in rows if r.get("spearman") is not None]
    if not scored:
        raise AutocompError("proxy audit: no proxy produced a usable correlation (all predictions or drops constant)")
    return max(scored, key=lambda r: (r["spearman"], r["kendall"] or -2.0))["proxy"]
