"""Do measured interactions help? Prediction error and fronts, additive against pairwise.

Per workload (built-in ``digits``, ``digits-vit``):

1. A plain search (``--points P``, the loss_delta proxy) and the interactions of its sensitivity
   for ``--k`` layers (the stage ``--interactions K`` runs).
2. Prediction on held-out random policies (each layer a uniformly drawn choice of the space,
   evaluated with PTQ): the additive model ``s * sum omega`` against the pairwise model
   ``s * sum omega + measured terms`` (``s`` fitted on the measured singles, shared by both):
   Spearman of predicted degradation against measured drop within three equal-count size bands,
   and the mean absolute error of the predicted degradation. The baseline is the additive model.
3. Fronts at equal evaluations: ``--interactions K --repair R`` against the plain search given
   the same number of evaluations as Optuna refinement (``--refine``); reported: evaluations,
   best quality within the budget, and the hypervolume of (quality, size) up to the budget
   (over 1 / quality for a lower-is-better metric such as perplexity)
   (ratio pairwise / plain).

    python benchmarks/interactions.py [--models digits digits-vit] [--k 4] [--samples 40]
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time

import numpy as np


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return float("nan") if r is None else float(r)


def hypervolume(points: list[tuple[float, float]], max_size: float) -> float:
    """Area dominated by (size, accuracy) points with size <= max_size (reference: size max_size, accuracy 0)."""
    pts = sorted((s, a) for s, a in points if s <= max_size * (1 + 1e-9))
    area, best = 0.0, 0.0
    edges = [s for s, _ in pts] + [max_size]
    for (s, a), nxt in zip(pts, edges[1:]):
        best = max(best, a)
        area += best * (nxt - s)
    return area / max_size


def random_policies(ctx, n: int, seed: int):
    from autocomp.policy import Policy

    rng = random.Random(seed)
    layers = list(ctx.layers)
    resolved = ctx.space.resolved_choices(layers)
    out, seen = [], set()
    while len(out) < n:
        pick = {}
        for unit in resolved.units():
            c = rng.choice(resolved.choices[unit[0]])
            pick.update({name: c for name in unit})
        p = Policy.from_choices([(name, pick[name]) for name in ctx.names])
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return out


def study_summary(store, name: str, budget_frac: float, fp32_size: float) -> dict:
    from autocomp.report import study_points

    from autocomp.metrics import get_quality_metric

    st = store.get_study(name)
    higher = get_quality_metric(st.config.get("quality", "accuracy")).higher_is_better
    pts = study_points(store, st)
    evals = len(store.list_evaluations(st, kind=None))
    pts = [(p["size"] / fp32_size, p["quality"]) for p in pts if p["source"] not in ("uniform", "fp32")]
    within = [a for s, a in pts if s <= budget_frac * (1 + 1e-9)]
    best = (max(within) if higher else min(within)) if within else float("nan")
    # the hypervolume needs higher-is-better: a lower-is-better metric (perplexity) enters as 1 / value
    return {"evaluations": evals, "best": best,
            "hv": hypervolume([(s, a if higher else 1.0 / a) for s, a in pts], budget_frac)}


def run_workload(model: str, args, d: str) -> None:
    from autocomp.search import SearchConfig, run_search
    from autocomp.stages import load_context
    from autocomp.stages.evaluate import evaluate
    from autocomp.stages.interactions import measure_interactions
    from autocomp.store import Store

    store = Store(f"sqlite:///{os.path.join(d, model + '.db')}")
    base = dict(model=model, budget=args.budget, points=args.points, workers=args.workers, seed=args.seed)
    t0 = time.perf_counter()
    run_search(SearchConfig(**base), store, "plain")
    st = store.get_study("plain")
    ctx = load_context(store, st)
    sens = store.load_sensitivity(st, "loss_delta")
    it = measure_interactions(store, st, ctx, sens, args.k, workers=args.workers)
    n_probes = 1 + sum(len(r) for r in it.singles.values()) + sum(len(r) for r in it.pairs.values())
    print(f"\n== {model}: {len(ctx.layers)} layers, k={args.k}: {len(it.pairs)} pairs, {n_probes} probes "
          f"(fitted scale s={it.scale(sens):.4g}), {time.perf_counter() - t0:.0f} s")
    terms = [v for row in it.terms().values() for v in row.values()]
    print(f"   measured terms: mean {np.mean(terms):+.4f}, mean |term| {np.mean(np.abs(terms)):.4f}, "
          f"max |term| {np.max(np.abs(terms)):.4f} (in units of the quality metric)")

    # ---- prediction on held-out random policies ---------------------------------------------
    held = random_policies(ctx, args.samples, args.seed + 1)
    hst, _ = store.open_study("heldout", dict(st.config))
    evaluate(store, hst, ctx.spec, ctx.cm, held, workers=args.workers)
    q = {e.policy_id: e.quality for e in store.list_evaluations(hst)}
    drop = np.array([it.drop(q[p.id]) for p in held])
    add = np.array([it.predict(sens, p, pairwise=False) for p in held])
    pair = np.array([it.predict(sens, p) for p in held])
    size = np.array([ctx.cm.cost("size", p) for p in held])
    touched = np.array([abs(a - b) > 0 for a, b in zip(add, pair)])
    bands = np.array_split(np.argsort(size), 3)
    print(f"   held-out: {len(held)} random policies, {int(touched.sum())} meet a measured pair")
    print(f"   {'':12s} {'additive':>10s} {'pairwise':>10s} {'ratio':>8s}")
    for k, idx in enumerate(bands):
        sa, sp = spearman(add[idx], drop[idx]), spearman(pair[idx], drop[idx])
        print(f"   spearman b{k}  {sa:10.3f} {sp:10.3f} {sp / sa if sa else float('nan'):8.2f}")
    ma, mp = float(np.mean(np.abs(add - drop))), float(np.mean(np.abs(pair - drop)))
    print(f"   MAE          {ma:10.4f} {mp:10.4f} {mp / ma:8.2f}")
    if touched.any():
        ma_t, mp_t = float(np.mean(np.abs(add - drop)[touched])), float(np.mean(np.abs(pair - drop)[touched]))
        print(f"   MAE (pairs)  {ma_t:10.4f} {mp_t:10.4f} {mp_t / ma_t:8.2f}")

    # ---- fronts at equal evaluations ----------------------------------------------------------
    run_search(SearchConfig(**base, interactions=args.k, repair=args.repair), store, "inter")
    fp32 = st.config["fp32"]["size"]
    frac = ctx.limits["size"] / fp32
    inter = study_summary(store, "inter", frac, fp32)
    plain_evals = study_summary(store, "plain", frac, fp32)["evaluations"] - n_probes
    extra = max(1, inter["evaluations"] - plain_evals)
    run_search(SearchConfig(**base, refine=extra), store, "refined")
    ref = study_summary(store, "refined", frac, fp32)
    print(f"   fronts within {args.budget}: {'evals':>6s} {'best':>9s} {'hypervol':>9s}")
    print(f"   plain+refine {extra:3d}  {ref['evaluations']:6d} {ref['best']:9.4f} {ref['hv']:9.4f}")
    print(f"   interactions  {' ':3s} {inter['evaluations']:6d} {inter['best']:9.4f} {inter['hv']:9.4f}")
    print(f"   ratio (interactions / plain+refine): best {inter['best'] / ref['best']:.4f}, "
          f"hypervolume {inter['hv'] / ref['hv']:.4f}; {time.perf_counter() - t0:.0f} s")
    store.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits", "digits-vit"])
    ap.add_argument("--budget", default="size<=25%")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repair", type=int, default=8)
    ap.add_argument("--points", type=int, default=12)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {vars(args)}")
    from autocomp.workers.session import ensure_ray

    ensure_ray(None, num_cpus=args.workers)
    with tempfile.TemporaryDirectory() as d:
        for m in args.models:
            run_workload(m, args, d)


if __name__ == "__main__":
    main()
