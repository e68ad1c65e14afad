"""Do joint pruning + quantization policies beat quantization-only ones at equal size?

Runs two real searches on a workload (default ``digits``) with the same proxy, allocator, budget
and number of points - ``--space prune_quant`` (joint) and ``--space mixed_precision``
(quantization only, the baseline) - and compares their measured (PTQ) fronts: at each size of
the quantization-only front, the best accuracy either search reached within that size.

    python benchmarks/joint_vs_quant.py [--model digits] [--allocator dp] [--points 16] [--db /tmp/jvq.db]

Prints one row per size and the mean accuracy gain of joint over quantization-only (in
percentage points) on the sizes where quantization alone loses more than 1 point of accuracy.
"""
from __future__ import annotations

import argparse

from autocomp.report import study_points
from autocomp.search import SearchConfig, run_search
from autocomp.store import Store


def best_within(points: list[dict], size: float) -> float:
    accs = [p["accuracy"] for p in points if p["size"] <= size * (1 + 1e-9)]
    return max(accs) if accs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits")
    ap.add_argument("--allocator", default="dp")
    ap.add_argument("--proxy", default="loss_delta")
    ap.add_argument("--budget", default="size<=25%")
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--db", default="/tmp/autocomp-jvq.db")
    args = ap.parse_args()
    store = Store(f"sqlite:///{args.db}")
    pts = {}
    for space in ("mixed_precision", "prune_quant"):
        cfg = SearchConfig(model=args.model, budget=args.budget, space=space, proxy=args.proxy,
                           allocator=args.allocator, points=args.points)
        name = f"jvq-{args.model}-{space}-{args.allocator}-{args.points}"
        run_search(cfg, store, name)  # resumes (re-evaluates nothing) when the study exists
        pts[space] = [p for p in study_points(store, store.get_study(name)) if p["source"] != "fp32"]
    quant, joint = pts["mixed_precision"], pts["prune_quant"]
    fp = store.get_study(name).config["fp32"]["size"]
    sizes = sorted({p["size"] for p in quant})
    print(f"{'size':>10} {'size %':>7} {'quant-only':>10} {'joint':>7} {'gain (pt)':>9}")
    gains = []
    for s in sizes:
        q, j = best_within(quant, s), best_within(joint, s)
        print(f"{s / 1e3:>8.1f}KB {100 * s / fp:>6.1f}% {q:>10.4f} {j:>7.4f} {100 * (j - q):>+9.2f}")
        if q < max(p["accuracy"] for p in quant) - 0.01:
            gains.append(j - q)
    wins = sum(g > 0 for g in gains)
    print(f"joint study: {len(joint)} evaluated policies; quant-only: {len(quant)}")
    if gains:
        print(f"where quantization alone loses >1 pt: joint better at {wins}/{len(gains)} sizes, "
              f"mean gain {100 * sum(gains) / len(gains):+.2f} pt")
    # Within the joint study: do the policies that actually prune sit on its front?
    from autocomp.report import pareto

    front = pareto(joint, ["size"])
    study = store.get_study(name)
    pruned = [p for p in front
              if any(l.get("prune", 0) > 0 for l in store.get_policy(study, p["policy_id"]).policy["layers"])]
    print(f"joint front: {len(front)} points, {len(pruned)} of them prune at least one layer")


if __name__ == "__main__":
    main()
