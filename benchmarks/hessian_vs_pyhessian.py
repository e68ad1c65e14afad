"""Per-layer Hessian traces (autocomp) vs PyHessian's total trace, side by side in one run.

torchvision resnet18 with random weights, one batch of 16 x 3 x 64 x 64 with random labels,
cross-entropy, the same number of probes for every estimator. PyHessian differentiates every
parameter (BatchNorm scales and shifts included) and returns the total trace only; autocomp
differentiates the conv/linear weights and returns every layer's trace from the same products:

* autocomp ``auto`` -- on resnet18 (piecewise linear in every layer) the Gauss-Newton form, which
  is the exact block Hessian there: one backward pass per probe;
* autocomp ``hvp`` -- Hutchinson with Hessian-vector products, what PyHessian computes.

Agreement: all totals are unbiased estimates of the same trace (BatchNorm parameters aside, which
PyHessian includes); their difference is reported in standard errors. "At equal agreement" is the
time each estimator needs to reach the same standard error, time per probe x variance, with the
variances measured in this run.

    python benchmarks/hessian_vs_pyhessian.py [--probes 16] [--threads 1] [--ray-workers 2]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ray-workers", type=int, default=0, help="also time probes split over N Ray tasks")
    ap.add_argument("--per-layer-baseline", action="store_true",
                    help="also time PyHessian restricted to one layer at a time (1 probe per layer)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import torchvision
    from pyhessian import hessian as PyHessian

    from autocomp.profile import profile_model
    from autocomp.proxies.hessian import chosen_estimator, probe_values

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))
    crit = torch.nn.CrossEntropyLoss()
    names = [l.name for l in profile_model(model, x)]
    p = a.probes

    est = chosen_estimator(model, crit, (x, y), names)
    for e in ("auto", "hvp"):
        probe_values(model, crit, (x, y), names, [0], estimator=e)          # warm-up (allocator, mkldnn)
    auto, t_auto = _timed(lambda: probe_values(model, crit, (x, y), names, range(p), estimator="auto"))
    hvp, t_hvp = _timed(lambda: probe_values(model, crit, (x, y), names, range(p), seed=1, estimator="hvp"))

    ph = PyHessian(model, crit, data=(x, y), cuda=False)  # gradient graph built once, like ours
    ph.trace(maxIter=1, tol=0.0)                           # warm-up
    # One probe per call: PyHessian's stopping test divides by the signed running trace and can
    # stop after two probes on an indefinite Hessian (NNCF #2155); per-probe cost is unchanged.
    theirs, t_ph = _timed(lambda: np.array([ph.trace(maxIter=1, tol=0.0)[0] for _ in range(p)]))

    A = np.array([[d.get(n, 0.0) for n in names] for d in auto])
    H = np.array([[d.get(n, 0.0) for n in names] for d in hvp])
    ta, th, tp = t_auto / p, t_hvp / p, t_ph / p
    print(f"resnet18, batch 16x3x64x64, {p} probes each, {a.threads} thread(s); auto estimator: {est}")
    print(f"{'':34s}{'total trace':>14s}{'sd/probe':>11s}{'s/probe':>9s}")
    for label, tot, t in ((f"PyHessian total", theirs, tp), (f"autocomp hvp ({len(names)} layers)", H.sum(1), th),
                          (f"autocomp {est} ({len(names)} layers)", A.sum(1), ta)):
        print(f"{label:34s}{tot.mean():14.1f}{tot.std(ddof=1):11.1f}{t:9.3f}")
    for label, tot in (("hvp", H.sum(1)), (est, A.sum(1))):
        se = math.sqrt(tot.var(ddof=1) / p + theirs.var(ddof=1) / p)
        print(f"agreement with PyHessian ({label}): |diff| = {abs(tot.mean() - theirs.mean()) / se:.2f} standard errors")
    print(f"speed-up per probe, same probe count (PyHessian / autocomp {est}): {tp / ta:.2f}x "
          f"(autocomp hvp: {tp / th:.2f}x)")
    eq_total = (tp * theirs.var(ddof=1)) / (ta * A.sum(1).var(ddof=1))
    print(f"speed-up at equal agreement on the total trace (time x variance): {eq_total:.1f}x")
    ratios = (th * H.var(0, ddof=1)) / np.maximum(ta * A.var(0, ddof=1), 1e-30)
    print(f"speed-up at equal per-layer agreement over HVP probes (PyHessian's product; per layer): "
          f"median {np.median(ratios):.1f}x, min {ratios.min():.1f}x over {len(names)} layers")
    if a.per_layer_baseline:
        per_layer_pyhessian(model, crit, x, y, names, ta)
    if a.ray_workers:
        ray_time(model, crit, x, y, names, p, a.ray_workers, t_ph)


def per_layer_pyhessian(model, crit, x, y, names, ours_per_probe) -> None:
    """PyHessian gives per-layer traces only by differentiating one layer at a time (as HAWQ does)."""
    from pyhessian import hessian as PyHessian

    mods = dict(model.named_modules())
    saved = {p: p.requires_grad for p in model.parameters()}
    total = 0.0
    for n in names:
        for p in model.parameters():
            p.requires_grad_(False)
        mods[n].weight.requires_grad_(True)
        t0 = time.perf_counter()
        ph = PyHessian(model, crit, data=(x, y), cuda=False)
        ph.trace(maxIter=1, tol=0.0)
        total += time.perf_counter() - t0
    for p, r in saved.items():
        p.requires_grad_(r)
    print(f"PyHessian per layer ({len(names)} runs, 1 probe each, graph build included): {total:.2f} s per probe "
          f"round; per-layer speed-up of autocomp: {total / ours_per_probe:.1f}x")


def ray_time(model, crit, x, y, names, probes, workers, t_ph) -> None:
    import ray

    from autocomp.proxies.hessian import probe_values

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)

    @ray.remote(num_cpus=1)
    def part(model, x, y, ids):
        torch.set_num_threads(1)
        return probe_values(model, crit, (x, y), names, ids)

    refs = (ray.put(model), ray.put(x), ray.put(y))
    ray.get([part.remote(*refs, [0]) for _ in range(workers)])   # workers started and warm
    chunks = [list(range(i, probes, workers)) for i in range(workers)]
    t0 = time.perf_counter()
    vals = [v for r in ray.get([part.remote(*refs, c) for c in chunks]) for v in r]
    t = time.perf_counter() - t0
    print(f"autocomp per-layer on {workers} Ray workers: {len(vals)} probes in {t:.2f} s; "
          f"speed-up over PyHessian: {t_ph / t:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
