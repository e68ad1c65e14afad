"""Evolved proxy vs the hand-designed ones: held-out Spearman and Kendall on a proxy bench.

    python benchmarks/evolve.py [--model digits] [--samples 90] [--db sqlite:///evolve-bench.db]
                                [--seeds 0,1,2] [--generations 30] [--population 48] [--workers 2]
                                [--compare lrp] [--max-size 5 --max-depth 3 --validation 0]

Runs (or resumes) ``autocomp proxies bench`` on the model, then one evolution per seed: each seed
also draws a different split of the cost bands into training and held-out bands, so the table
reports, per proxy, the held-out within-band and global Spearman and Kendall averaged over the
splits (and each split's within-band Spearman). The baseline, measured in the same run on the
same held-out bands, is the best hand-designed proxy; the last line prints the evolved proxy's
mean against it as a ratio. The measured metric's direction is the bench's (``load_bench``: the
drop is "larger is worse" for accuracy and perplexity alike), so every figure is "higher is better".
"""
from __future__ import annotations

import argparse
import time

from autocomp.evolution import EvolveConfig, run_evolution
from autocomp.stages.bench import BenchConfig, run_bench
from autocomp.store import Store

FIGURES = ("band_spearman", "band_kendall", "spearman", "kendall")


def mean(v) -> float:
    xs = [x for x in v if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def print_table(table: dict[str, dict[str, list]], evolved: str = "evolved") -> None:
    """Rows best held-out within-band Spearman first; the ratio to the best hand-designed one."""
    print(f"\n| proxy | in-band Spearman | in-band Kendall | global Spearman | global Kendall | "
          f"in-band Spearman per split |")
    print("|---|---:|---:|---:|---:|---|")
    for name, figs in sorted(table.items(), key=lambda kv: -mean(kv[1]["band_spearman"])):
        per = " ".join("-" if v is None else f"{v:+.3f}" for v in figs["band_spearman"])
        print(f"| `{name}` | " + " | ".join(f"{mean(figs[f]):+.3f}" for f in FIGURES) + f" | {per} |")
    hand = [n for n in table if not n.startswith("evolved")]
    if evolved in table and hand:
        best = max(hand, key=lambda n: mean(table[n]["band_spearman"]))
        e, b = mean(table[evolved]["band_spearman"]), mean(table[best]["band_spearman"])
        print(f"\n{evolved} / best hand-designed ({best}), held-out in-band Spearman: {e:+.3f} / {b:+.3f} "
              f"= {e / b:.2f}")


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
    ap.add_argument("--compare", default="lrp", help="further hand-designed proxies benched (comma list)")
    ap.add_argument("--max-size", type=int, default=EvolveConfig.max_size)
    ap.add_argument("--max-depth", type=int, default=EvolveConfig.max_depth)
    ap.add_argument("--validation", type=float, default=0.0)
    args = ap.parse_args()
    study = args.study or f"bench-{args.model}"
    store = Store(args.db)
    t0 = time.perf_counter()
    out = run_bench(BenchConfig(model=args.model, samples=args.samples, workers=args.workers,
                                compare=tuple(p for p in args.compare.split(",") if p)), store, study)
    print(f"bench {study!r}: {out['policies']} policies, {out['evaluated']} evaluated now "
          f"({time.perf_counter() - t0:.1f} s)")
    table: dict[str, dict[str, list]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        t1 = time.perf_counter()
        res = run_evolution(EvolveConfig(bench=study, generations=args.generations, population=args.population,
                                         seed=seed, workers=args.workers, max_size=args.max_size,
                                         max_depth=args.max_depth, validation=args.validation), store)
        print(f"seed {seed}: {res['text']}  train in-band {res['train']['band_spearman']:+.3f}, held-out "
              f"{res['held_out']['bands']} bands / {res['held_out']['policies']} policies "
              f"({time.perf_counter() - t1:.1f} s)")
        for name, r in [("evolved", res["held_out"]), *res["hand_designed"].items()]:
            for f in FIGURES:
                table.setdefault(name, {}).setdefault(f, []).append(r[f])
    print_table(table)


if __name__ == "__main__":
    main()
