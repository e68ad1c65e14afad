"""Transfer: a proxy evolved on one workload's bench, scored on another workload's held-out bands.

    python benchmarks/evolve_transfer.py --bench digits=sqlite:////tmp/evid/bench90.db \
        --bench digits-vit=sqlite:////tmp/evid/vit.db --bench tiny-lm=sqlite:////tmp/evid/lm.db \
        [--seeds 0,1,2] [--generations 30] [--population 48] [--workers 2]

Each ``--bench MODEL=DB`` names a stored bench (study ``bench-MODEL``, or ``MODEL=DB#STUDY``; build
them with ``benchmarks/evolve.py``). Per workload and seed the evolution is run or resumed with the
same settings as ``benchmarks/evolve.py`` (a stored run re-evolves nothing), which fixes the seed's
split of the cost bands. For every target workload and split, on the same held-out policies:

* its own evolved proxy (evolved on the other bands of the same bench),
* every other workload's evolved proxies (one per seed of that workload; evolved on a bench that
  shares no policy with the target, so the whole evolution is out of sample) -- averaged over
  those seeds,
* the expressions shipped in ``proxies/evolved/`` (``evolved:NAME``; the one named after the
  target is left out: it was evolved on one split of this very bench, so it is not out of sample),
* every hand-designed proxy stored in the target's bench,

each with the held-out within-band and global Spearman and Kendall (averaged over the splits).
A transferred expression that reads a primitive the target bench lacks is reported as
``n/a (missing: ...)``, one that is not finite there as ``n/a (non-finite)``: neither is scored as
zero. Primitives that are identically 0 on some layer of the target (``act_sq`` and ``act_range``
of an embedding, whose input is token ids) are listed: division by them goes through the
expression's safe division (``1e-12``), which the output names as "degenerate".
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from autocomp.evolution import EvolveConfig, held_out, run_evolution, split_bands
from autocomp.proxies.evolved import FOLDER, entries, terminals
from autocomp.proxies.evolved import expression as ex
from autocomp.proxies.evolved.primitives import CHOICE
from autocomp.search_spaces import load_space
from autocomp.stages.bench import load_bench
from autocomp.store import Store

FIGURES = ("band_spearman", "band_kendall", "spearman", "kendall")


def available(bench) -> set[str]:
    return {*bench.primitives.layer, *bench.primitives.choice, *CHOICE}


def degenerate(bench) -> set[str]:
    """Layer primitives that are exactly 0 on at least one layer of the bench's model."""
    return {p for p, vals in bench.primitives.layer.items() if any(v == 0.0 for v in vals.values())}


class Target:
    """A bench with the arrays an expression is scored on (only the primitives the bench holds)."""

    def __init__(self, bench):
        self.bench = bench
        items, self.layer = entries(bench.layers, load_space(bench.space))
        where = {(n, c.key): i for i, (n, c) in enumerate(items)}
        self.idx = np.asarray([[where[(n, c.key)] for n, c in p.layers] for p in bench.policies], dtype=np.int64)
        self.env = terminals(bench.primitives, items, sorted(available(bench)))

    def score(self, tree, mask: np.ndarray) -> dict | str:
        """Held-out figures of ``tree``, or why it cannot be scored here."""
        missing = sorted(set(ex.leaves(tree)) - set(self.env))
        if missing:
            return f"n/a (missing: {', '.join(missing)})"
        values = ex.evaluate(tree, self.env, self.layer)
        pred = values[self.idx].sum(axis=1)
        if not np.isfinite(pred).all():
            return "n/a (non-finite)"
        return held_out(pred.tolist(), self.bench, mask)


def mean(v) -> float | None:
    xs = [x for x in v if x is not None]
    return sum(xs) / len(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", action="append", required=True, help="MODEL=DB_URL[#STUDY] (repeat)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--population", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write every figure here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    benches, stores = {}, {}
    for spec in args.bench:
        model, _, rest = spec.partition("=")
        url, _, study = rest.partition("#")
        stores[model] = (Store(url), study or f"bench-{model}")
        benches[model] = load_bench(*stores[model])
    # Evolve (or resume) every workload's seeds: expressions and their splits.
    evolved: dict[str, list[dict]] = {}
    for model, (store, study) in stores.items():
        for seed in seeds:
            cfg = EvolveConfig(bench=study, generations=args.generations, population=args.population, seed=seed,
                               workers=args.workers)
            res = run_evolution(cfg, store)
            b = benches[model]
            mask = split_bands(b.costs, b.band_tol, cfg.train_fraction, seed)
            evolved.setdefault(model, []).append({"seed": seed, "tree": res["expression"], "text": res["text"],
                                                  "mask": mask, "own": res["held_out"],
                                                  "hand": res["hand_designed"]})
            print(f"{model} seed {seed}: {res['text']}")
    shipped = {f"evolved:{p.stem}": json.loads(p.read_text())["expression"] for p in sorted(FOLDER.glob("*.json"))}
    out: dict[str, dict] = {}
    for target, runs in evolved.items():
        t = Target(benches[target])
        rows: dict[str, list[dict | str]] = {}          # row -> one entry per target split
        notes: dict[str, str] = {}
        for run in runs:
            rows.setdefault(f"own (evolved on {target})", []).append(run["own"])
            for source, sruns in evolved.items():
                if source == target:
                    continue
                per = [t.score(s["tree"], run["mask"]) for s in sruns]
                bad = [p for p in per if isinstance(p, str)]
                rows.setdefault(f"from {source}", []).append(
                    bad[0] if bad else {f: mean([p[f] for p in per]) for f in FIGURES})
                deg = sorted({x for s in sruns for x in ex.leaves(s["tree"])} & degenerate(t.bench))
                if deg:
                    notes[f"from {source}"] = f"reads {', '.join(deg)} (0 on some {target} layer)"
            for name, tree in shipped.items():
                if name == f"evolved:{target}":      # evolved on this bench: its training bands overlap
                    continue                          # the other splits' held-out ones (not out of sample)
                rows.setdefault(name, []).append(t.score(tree, run["mask"]))
                deg = sorted(set(ex.leaves(tree)) & degenerate(t.bench))
                if deg:
                    notes[name] = f"reads {', '.join(deg)} (0 on some {target} layer)"
            for name, r in run["hand"].items():
                rows.setdefault(name, []).append(r)
        table = {}
        for name, per in rows.items():
            bad = [p for p in per if isinstance(p, str)]
            table[name] = bad[0] if bad else {f: mean([p[f] for p in per]) for f in FIGURES}
        out[target] = {"rows": table, "notes": notes,
                       "held_out": [{"bands": r["own"]["bands"], "policies": r["own"]["policies"]} for r in runs],
                       "expressions": {m: [s["text"] for s in rs] for m, rs in evolved.items()}}
        sizes = ", ".join(f"{h['bands']}/{h['policies']}" for h in out[target]["held_out"])
        print(f"\n### target {target} (held-out bands/policies per split: {sizes})\n")
        print("| proxy | in-band Spearman | in-band Kendall | global Spearman | global Kendall |")
        print("|---|---:|---:|---:|---:|")
        fmt = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
        order = sorted(table, key=lambda n: -(table[n]["band_spearman"] or -9) if isinstance(table[n], dict) else 9)
        for name in order:
            r = table[name]
            cells = [r] * 4 if isinstance(r, str) else [fmt(r[f]) for f in FIGURES]
            note = f" ({notes[name]})" if name in notes else ""
            print(f"| {name}{note} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
