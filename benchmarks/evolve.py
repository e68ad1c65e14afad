"""Evolved proxy vs the hand-designed ones: held-out within-band Spearman on a proxy bench.

    python benchmarks/evolve.py [--model digits] [--samples 90] [--db sqlite:///evolve-bench.db]
                                [--seeds 0,1,2] [--generations 30] [--population 48] [--workers 2]

Runs (or resumes) ``autocomp proxies bench`` on the model, then one evolution per seed: each seed
also draws a different split of the cost bands into training and held-out bands, so the table
reports, per proxy, the held-out within-band Spearman averaged over the splits (and each split's
figure). The baseline, measured in the same run on the same held-out bands, is the best
hand-designed proxy; the last line prints the evolved proxy's mean against it as a ratio.
"""
from __future__ import annotations

import argparse
import time

from autocomp.evolution import EvolveConfig, run_evolution
from autocomp.stages.bench import BenchConfig, run_bench
from autocomp.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits")
    ap.add_argument("--samples", type=int, default=90)
    ap.add_argument("--db", default="sqlite:///evolve-bench.db")
    ap.add_argument("--study", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--population", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    study = args.study or f"bench-{args.model}"
    store = Store(args.db)
    t0 = time.perf_counter()
    out = run_bench(BenchConfig(model=args.model, samples=args.samples, workers=args.workers, compare=("lrp",)),
                    store, study)
    print(f"bench {study!r}: {out['policies']} policies, {out['evaluated']} evaluated now "
          f"({time.perf_counter() - t0:.1f} s)")
    table: dict[str, list[float | None]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        t1 = time.perf_counter()
        res = run_evolution(EvolveConfig(bench=study, generations=args.generations, population=args.population,
                                         seed=seed, workers=args.workers), store)
        print(f"seed {seed}: {res['text']}  train in-band {res['train']['band_spearman']:+.3f}, held-out "
              f"{res['held_out']['bands']} bands / {res['held_out']['policies']} policies "
              f"({time.perf_counter() - t1:.1f} s)")
        table.setdefault("evolved", []).append(res["held_out"]["band_spearman"])
        for name, r in res["hand_designed"].items():
            table.setdefault(name, []).append(r["band_spearman"])

    def mean(v: list[float | None]) -> float:
        xs = [x for x in v if x is not None]
        return sum(xs) / len(xs) if xs else float("nan")

    print(f"\n{'proxy':<16}{'mean':>8}  per split (held-out within-band Spearman)")
    for name, vals in sorted(table.items(), key=lambda kv: -mean(kv[1])):
        print(f"{name:<16}{mean(vals):>+8.3f}  " + "  ".join("-" if v is None else f"{v:+.3f}" for v in vals))
    best = max((n for n in table if n != "evolved"), key=lambda n: mean(table[n]))
    print(f"\nevolved / best hand-designed ({best}): {mean(table['evolved']):+.3f} / {mean(table[best]):+.3f} "
          f"= {mean(table['evolved']) / mean(table[best]):.2f}")


if __name__ == "__main__":
    main()
