"""Fronts at equal evaluations: a search with an evolved proxy against the hand-designed ones.

    python benchmarks/evolve_fronts.py [--model digits] [--proxies evolved:digits,loss_delta,hessian_trace,fisher]
                                       [--points 8] [--budget 'size<=25%'] [--db sqlite:////tmp/evolve-fronts.db]

One search per proxy on the same model, space, budget sweep and seed: every search evaluates the
same number of policies (``--points`` allocations plus the same uniform baselines), so the fronts
differ only by what the proxy told the allocator. Each front's hypervolume (quality x size, the
searched policies only: the baselines are common to all) is printed with the ratio to the best
hand-designed proxy measured in the same run. Studies resume: a second run re-evaluates nothing.
"""
from __future__ import annotations

import argparse
import time

from autocomp.compare import hypervolume, reference_quality
from autocomp.report import quality, quality_metric
from autocomp.search import SearchConfig, run_search
from autocomp.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits")
    ap.add_argument("--proxies", default="evolved:digits,loss_delta,hessian_trace,fisher")
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--budget", default="size<=25%")
    ap.add_argument("--space", default="mixed_precision")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", default="sqlite:////tmp/evolve-fronts.db")
    args = ap.parse_args()
    store = Store(args.db)
    proxies = [p for p in args.proxies.split(",") if p]
    fronts, evals, secs = {}, {}, {}
    for p in proxies:
        name = f"fronts-{args.model}-{p.replace(':', '-')}-{args.points}"
        t0 = time.perf_counter()
        cfg = SearchConfig(model=args.model, budget=args.budget, space=args.space, proxy=p, points=args.points,
                           workers=args.workers, seed=args.seed)
        res = run_search(cfg, store, name)
        secs[p] = time.perf_counter() - t0
        st = store.get_study(name)
        fronts[p] = ([pt for pt in res.front if not pt["baseline"]], st.config.get("fp32", {}))
        evals[p] = len(store.evaluated_ids(st))
    metric = quality_metric(next((f for f, _ in fronts.values() if f), []))
    ref_q = reference_quality([pt for f, _ in fronts.values() for pt in f], metric)
    hv = {p: hypervolume(f, ["size"], fp32, reference=[ref_q, 1.0], metric=metric) for p, (f, fp32) in fronts.items()}
    print(f"model {args.model}, space {args.space}, budget {args.budget}, {args.points} points, "
          f"metric {metric.name}")
    print(f"| proxy | evaluations | front points | best {metric.name} | hypervolume | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for p in proxies:
        f, _ = fronts[p]
        best = min((quality(pt) for pt in f), key=metric.key, default=float("nan"))
        print(f"| `{p}` | {evals[p]} | {len(f)} | {best:.4f} | {hv[p]:.5f} | {secs[p]:.0f} |")
    hand = [p for p in proxies if not p.startswith("evolved:")]
    for p in proxies:
        if p.startswith("evolved:") and hand:
            base = max(hand, key=lambda h: hv[h])
            print(f"ratio {p} / best hand-designed ({base}) hypervolume = {hv[p] / hv[base]:.3f}"
                  if hv[base] else f"{base}: zero hypervolume")


if __name__ == "__main__":
    main()
