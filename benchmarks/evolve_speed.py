"""Fitness speed of the proxy evolution (issue 13, "Speed"): candidates per second per core on a
stored bench, and the speed-up of one generation's scoring from 1 to 2 Ray workers.

    python benchmarks/evolve_speed.py --db sqlite:////tmp/evid/bench90.db [--study bench-digits]
                                      [--candidates 2000] [--repeats 3]

Candidates are random expression trees over the bench's primitives (``expression.grow``, depth 3,
seeded), screened and scored exactly as a generation is (:func:`autocomp.evolution.screen_and_score`,
on the evolution's training split): no model is touched, only the stored primitives. Measured:

- one process, no Ray: candidates / second (one core);
- :func:`autocomp.evolution._score_all` on a local Ray with 1 and with 2 workers, best of
  ``--repeats`` after a warm-up; the ratio is the speed-up (the baseline is the 1-worker run).
"""
from __future__ import annotations

import argparse
import os
import random
import time



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--study", default="bench-digits")
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ray

    from autocomp.evolution import EvolveConfig, _score_all, bench_data, screen_and_score, split_bands
    from autocomp.proxies.evolved import expression as ex
    from autocomp.proxies.evolved.primitives import NAMES
    from autocomp.search_spaces import load_space
    from autocomp.stages.bench import load_bench
    from autocomp.store import Store

    bench = load_bench(Store(args.db), args.study)
    cfg = EvolveConfig(bench=args.study)
    mask = split_bands(bench.costs, bench.band_tol, cfg.train_fraction, 0)
    data = bench_data(bench, load_space(bench.space))
    rng = random.Random(0)
    prims = sorted(NAMES)
    trees = [ex.grow(rng, prims, cfg.max_depth) for _ in range(args.candidates)]
    print(f"bench {args.study!r}: {len(bench.policies)} policies, {len(data['layer'])} (layer, choice) entries, "
          f"{int(mask.sum())} training policies; {len(trees)} candidates; load {os.getloadavg()[0]:.1f}")

    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        local = [screen_and_score(t, data, mask, cfg.max_size) for t in trees]
        best = min(best, time.perf_counter() - t0)
    rejected = sum("reject" in r for r in local)
    print(f"one process: {len(trees) / best:,.0f} candidates/s per core ({best:.3f} s, {rejected} screened out; "
          f"target >= 1,000/s)")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ref = ray.put(data)
    times = {}
    for workers in (1, 2):
        out = _score_all(trees, ref, mask, workers, cfg.max_size)          # warm-up: worker processes
        assert [r.get("fitness") for r in out] == [r.get("fitness") for r in local]   # same result
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _score_all(trees, ref, mask, workers, cfg.max_size)
            best = min(best, time.perf_counter() - t0)
        times[workers] = best
        print(f"Ray, {workers} worker(s): {best:.3f} s per generation ({len(trees) / best:,.0f} candidates/s)")
    print(f"speed-up 1 -> 2 workers: {times[1] / times[2]:.2f}x (target >= 1.7x); load {os.getloadavg()[0]:.1f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
