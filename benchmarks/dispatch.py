"""Ray dispatch overhead per PTQ evaluation, and the speed-up of 32 evaluations from 1 to 2 workers.

Baselines measured in the same run:
- a bare Ray actor call (``ping``, no work) -> what Ray itself costs per call;
- the evaluations' own compute (``seconds`` each actor reports) -> overhead = wall - compute.

Overhead per evaluation = (wall time of N evaluations on one warm actor - the sum of their own
compute) / N: serialising the policy, scheduling, returning the result, the controller's loop.
Speed-up = wall(32 evaluations, 1 warm actor) / wall(32 evaluations, 2 warm actors); actor start
(loading the workload, calibrating) is reported apart, since a search pays it once per stage.

    python benchmarks/dispatch.py [--n 32] [--model digits]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time


def policies(spec: str, n: int, seed: int = 0):
    """``n`` distinct random policies of the default space (weight bits 2..8 per layer)."""
    from autocomp.profile import profile_model
    from autocomp.refine import ParamSpace
    from autocomp.search_spaces import load_space
    from autocomp.workload import load_workload

    wl = load_workload(spec)
    layers = profile_model(wl.model(), wl.sample_input())
    ps = ParamSpace(layers, load_space("mixed_precision"))
    rng, out = random.Random(seed), {}
    while len(out) < n:
        pol = ps.policy_of({p: rng.choice(d.choices) for p, d in ps.distributions.items()})
        out[pol.id] = pol
    return list(out.values())


def timed_map(pool, pols) -> tuple[float, float]:
    """(wall seconds, sum of the evaluations' own seconds)."""
    own: list[float] = []
    t0 = time.perf_counter()
    pool.map(pols, lambda r: own.append(r.seconds))
    return time.perf_counter() - t0, sum(own)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ray

    from autocomp.workers.pool import EvaluatorPool

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    pols = policies(args.model, args.n)

    @ray.remote(num_cpus=1)
    class Bare:
        def ping(self) -> bool:
            return True

    bare = Bare.remote()
    ray.get(bare.ping.remote())
    calls = []
    for _ in range(300):
        t0 = time.perf_counter()
        ray.get(bare.ping.remote())
        calls.append(time.perf_counter() - t0)
    ray.kill(bare)
    bare_ms = statistics.median(calls) * 1e3

    walls: dict[int, list[float]] = {1: [], 2: []}
    overheads, starts = [], {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        pool = EvaluatorPool(args.model, workers=workers)
        pool.warm()
        starts[workers] = time.perf_counter() - t0
        pool.map(pols[:workers], lambda r: None)  # first calls pay lazy imports
        for _ in range(args.repeats):
            wall, own = timed_map(pool, pols)
            walls[workers].append(wall)
            if workers == 1:
                overheads.append((wall - own) / len(pols))
        pool.close()
    ray.shutdown()

    w1, w2 = min(walls[1]), min(walls[2])
    over_ms = statistics.median(overheads) * 1e3
    print(f"bare actor call (median of 300):             {bare_ms:.2f} ms")
    print(f"dispatch overhead per evaluation (median):   {over_ms:.2f} ms  (target < 10 ms; "
          f"{over_ms / bare_ms:.1f}x a bare call)")
    print(f"evaluation compute, mean:                    {1e3 * w1 / len(pols) - over_ms:.0f} ms")
    print(f"{len(pols)} evaluations, 1 warm worker:             {w1:.2f} s (best of {args.repeats})")
    print(f"{len(pols)} evaluations, 2 warm workers:            {w2:.2f} s (best of {args.repeats})")
    print(f"speed-up 1 -> 2 workers:                     {w1 / w2:.2f}x  (target >= 1.7x)")
    print(f"actor start (load + calibrate), 1 / 2 workers: {starts[1]:.1f} s / {starts[2]:.1f} s")


if __name__ == "__main__":
    main()
