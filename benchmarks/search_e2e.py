"""Wall time per stage of the default search (`autocomp search` on digits), cold and resumed.

Baselines measured in the same run:
- the same policies evaluated serially in this process (no Ray) -> the speed-up of the Ray
  evaluate stage;
- a resumed run of the same study -> what resume costs when everything is stored.

    python benchmarks/search_e2e.py [--model digits] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits")
    ap.add_argument("--budget", default="size<=25%")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.policy import Policy, apply
    from autocomp.progress import Stages
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store
    from autocomp.workload import load_workload

    with tempfile.TemporaryDirectory() as d:
        store = Store(f"sqlite:///{os.path.join(d, 'bench.db')}")
        cfg = SearchConfig(model=args.model, budget=args.budget, workers=args.workers)
        t0 = time.perf_counter()
        cold = Stages()
        res = run_search(cfg, store, "bench", cold)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = Stages()
        res2 = run_search(cfg, store, "bench", warm)
        t_warm = time.perf_counter() - t0
        assert res2.evaluated_now == 0

        # Serial in-process evaluation of the same policies: the baseline for the evaluate stage.
        wl = load_workload(args.model)
        model = wl.model()
        pols = [Policy.from_dict(p.policy) for p in store.list_policies(res.study)]
        evals = store.list_evaluations(res.study)
        from autocomp.workers.session import cluster_cpus

        workers = args.workers or cluster_cpus()
        names = [n for n, _ in pols[0].layers]
        t0 = time.perf_counter()
        ranges = activation_ranges(activation_stats(model, names, wl.calib), (2, 3, 4, 5, 6, 7, 8, 16))
        for p in pols:
            wl.evaluate(apply(model, p, ranges))
        t_serial = time.perf_counter() - t0

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"model {args.model}, budget {args.budget}, {len(pols)} policies, front {len(res.front)} points")
    print("stage             cold (s)   resumed (s)")
    for k in cold.times:
        print(f"{k:<16} {cold.times[k]:9.2f} {warm.times.get(k, 0.0):12.2f}")
    print(f"{'total':<16} {t_cold:9.2f} {t_warm:12.2f}")
    ev = cold.times.get("evaluate", float("nan"))
    inside = sum(e.seconds or 0.0 for e in evals)
    print(f"evaluate on Ray: {ev:.2f} s wall vs serial in-process {t_serial:.2f} s -> ratio {t_serial / ev:.2f}x")
    print(f"  of which compute inside the actors: {inside:.2f} s summed over {workers} actors; "
          f"the rest is actor start-up (process, imports, workload load, calibration)")
    print(f"resume / cold: {t_warm / t_cold:.2f}")


if __name__ == "__main__":
    main()
