"""Proxy audit: how well does each proxy's predicted degradation rank measured accuracy drops?

``K`` policies are sampled across the budget range (from nearly all-high to nearly all-low bits),
evaluated with PTQ on Ray, and every proxy's additive prediction ``sum_l omega(l, c_l)`` is
rank-correlated (Spearman, Kendall) with the measured drop ``acc(fp32) - acc(policy)``. Results
are stored in the study database (``autocomp_proxy_audits``) with the sampled policies.

Beside that global figure, ``band_spearman`` is the Spearman correlation among policies whose
``band_metric`` cost lies within ``band_tol`` of each other, pooled over the cost bands
(:mod:`autocomp.bands`): the ranking the allocator needs, which a spread sample alone does not
test. ``band_mates`` adds that many policies of about the same cost beside each sampled one
(:func:`band_mates`) so that the bands are populated; :func:`best_proxy` (``--proxy auto``)
ranks by the within-band figure where one exists.

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

from autocomp.bands import band_spearman
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
    band_tol: float = 0.05        # relative cost tolerance of a band
    band_metric: str = "size"     # the cost the bands are cut on
    band_mates: int = 0           # extra policies of about the same cost per sampled policy

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


def band_mates(layers: Sequence, space, cm, anchor: Policy, n: int, tol: float = 0.05, metric: str = "size",
               rng: random.Random | None = None) -> list[Policy]:
    """Up to ``n`` distinct policies whose ``metric`` cost is within ``tol / 2`` of ``anchor``'s
    (so any two lie within ``tol`` of each other), made by trading bits between layers.

    Each mate starts from the anchor and takes random paired moves -- one layer a step milder,
    another a step harsher -- kept while the cost stays in the window; a few such trades reorder
    which layers carry the bits at the same budget.

    Example:
        >>> mates = band_mates(layers, space, cm, policy, 4, tol=0.05)   # doctest: +SKIP
    """
    rng = rng or random.Random(0)
    choices = space.choices(layers)
    ordered = {l.name: sorted(choices[l.name], key=lambda c: (-c.effective_w_bits, -c.a_bits)) for l in layers}
    table = {l.name: [cm.layer_cost(metric, l, c) for c in ordered[l.name]] for l in layers}
    current = anchor.as_dict()
    start = {l.name: ordered[l.name].index(current[l.name]) if current[l.name] in ordered[l.name] else 0
             for l in layers}
    target = sum(table[n_][i] for n_, i in start.items())
    window = max(abs(cm.cost(metric, anchor)), 1e-12) * tol / 2
    names = [l.name for l in layers if len(ordered[l.name]) > 1]
    out: list[Policy] = []
    seen = {anchor.id}
    for _ in range(n * 4):
        if len(out) >= n or len(names) < 2:
            break
        pos = dict(start)
        for _ in range(2 * len(names)):
            a, b = rng.sample(names, 2)
            ia, ib = pos[a] - 1, pos[b] + 1      # a milder (lower index), b harsher
            if ia < 0 or ib >= len(ordered[b]):
                continue
            cost = sum(table[k][i] for k, i in pos.items()) - table[a][pos[a]] + table[a][ia] - table[b][pos[b]] + \
                table[b][ib]
            if abs(cost - target) <= window:
                pos[a], pos[b] = ia, ib
        p = Policy.from_choices([(l.name, ordered[l.name][pos[l.name]]) for l in layers])
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
    from autocomp.proxies import get_proxy, list_proxies
    from autocomp.search_spaces import load_space
    from autocomp.metrics import get_quality_metric
    from autocomp.stages import check_data, evaluate
    from autocomp.workers.proxy_tasks import score_on_ray
    from autocomp.workers.session import ensure_ray
    from autocomp.stages.profile import load_profiled
    from autocomp.store.repository import check_study_name, ptq_kind

    stages = stages or Stages()
    check_study_name(study_name)
    check_bands(cfg.band_tol, cfg.band_mates, cfg.band_metric)
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
    wl, model, layers, cm = load_profiled(cfg.model, space, stages)
    study, _ = store.open_study(study_name, {"model": cfg.model, "kind": "audit", "audit": cfg.to_dict()})
    if study.config.get("model") != cfg.model:
        raise AutocompError(f"study {study_name!r} holds model {study.config.get('model')!r}, not {cfg.model!r}")
    if not store.load_layers(study):
        store.save_layers(study, layers)
    ensure_ray(cfg.address, num_cpus=cfg.workers, model=cfg.model)

    names = [l.name for l in layers]
    fp32 = Policy.uniform(names, Choice(32, 32, 0.0))
    policies = sample_policies(layers, space, cfg.samples, cfg.seed)
    if cfg.band_mates:
        rng = random.Random(cfg.seed + 1)
        seen = {p.id for p in policies}
        for anchor in list(policies):
            for m in band_mates(layers, space, cm, anchor, cfg.band_mates, cfg.band_tol, cfg.band_metric, rng):
                if m.id not in seen:
                    seen.add(m.id)
                    policies.append(m)
    costs = [cm.cost(cfg.band_metric, p) for p in policies]
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
                    band, nb, nin = band_spearman(pred, drops[qq], costs, cfg.band_tol)
                    row = {"proxy": name, "quantizer": qq, "spearman": rho, "kendall": tau, "band_spearman": band,
                           "bands": nb, "samples": len(policies), "seconds": secs, "data": cfg.data}
                    store.save_audit(study, {**row, "proxy": audit_key(name, qq)},
                                     {"predicted": pred, "drops": drops[qq], "policies": [p.id for p in policies],
                                      "quantizer": qq, "costs": costs, "band_tol": cfg.band_tol,
                                      "band_metric": cfg.band_metric, "bands": nb, "band_policies": nin})
                    rows.append(row)
                tick()
    rows.sort(key=_rank_key(rows), reverse=True)
    store.update_config(study, audit_best=rows[0]["proxy"] if rows else None)
    return rows


def check_bands(tol: float, mates: int, metric: str) -> None:
    """One-line errors for a bad band tolerance, band-mate count or cost metric."""
    from autocomp.costs import get_cost_metric

    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 < tol < 1):
        raise AutocompError(f"--band-tol must lie between 0 and 1 (a relative cost tolerance), got {tol}")
    if mates < 0:
        raise AutocompError(f"--band-mates must be at least 0, got {mates}")
    get_cost_metric(metric)


def _rank_key(rows: Sequence[dict[str, Any]]):
    """Within-band Spearman first when any row has one (the ranking the allocator needs), then the
    global Spearman, then Kendall; a missing figure ranks last."""
    banded = any(r.get("band_spearman") is not None for r in rows)

    def val(v: Any) -> float:
        return -2.0 if v is None else float(v)

    def key(r: dict[str, Any]) -> tuple[float, ...]:
        head = (val(r.get("band_spearman")),) if banded else ()
        return (*head, val(r.get("spearman")), val(r.get("kendall")))
    return key


def best_proxy(rows: Sequence[dict[str, Any]]) -> str:
    """The proxy to use: the highest within-band Spearman where any row has one (the global
    Spearman breaks ties and decides when no band is populated), over every quantizer's rows.

    Example:
        >>> best_proxy([{"proxy": "a", "spearman": 0.9, "band_spearman": 0.1},
        ...             {"proxy": "b", "spearman": 0.7, "band_spearman": 0.6}])
        'b'
        >>> best_proxy([{"proxy": "a", "spearman": 0.9}, {"proxy": "b", "spearman": 0.7}])
        'a'
    """
    scored = [r for r in rows if r.get("spearman") is not None or r.get("band_spearman") is not None]
    if not scored:
        raise AutocompError("proxy audit: no proxy produced a usable correlation (all predictions or drops constant)")
    return max(scored, key=_rank_key(scored))["proxy"]
