"""Layer-adaptive pruning by DP against uniform magnitude pruning, and how additive the output
distortion is, on a built-in workload (default ``digits``).

    python benchmarks/layer_prune.py [--model digits] [--samples 30]

Prints the additivity statistics (correlation of the summed single-layer distortions with the
measured joint distortion over random ratio assignments), then, per sparsity target, the
measured distortion and test accuracy of the DP allocation and of uniform pruning at the same
sparsity (the ratio DP / uniform is the figure of merit).
"""
from __future__ import annotations

import argparse

import torch

from autocomp.allocators.layer_prune import (DEFAULT_RATIOS, additivity, allocate_pruning, distortion_curves,
                                             joint_distortion, pruning_policy)
from autocomp.policy import apply
from autocomp.modules import call_model
from autocomp.profile import profile_model
from autocomp.workload import load_workload


def accuracy(model, workload) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in workload.eval:
            correct += int((call_model(model, x).argmax(-1) == y).sum())
            total += int(y.shape[0])
    return correct / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits")
    ap.add_argument("--samples", type=int, default=30)
    args = ap.parse_args()
    wl = load_workload(args.model)
    model = wl.model()
    layers = profile_model(model, wl.sample_input())
    curves = distortion_curves(wl, layers, DEFAULT_RATIOS, model=model)
    stats = additivity(wl, layers, curves, DEFAULT_RATIOS, samples=args.samples, model=model)
    print(f"{args.model}: {len(layers)} layers, ratios {DEFAULT_RATIOS}")
    print(f"additivity over {args.samples} random assignments: pearson {stats['pearson']:.3f}, "
          f"spearman {stats['spearman']:.3f}, median |joint - sum| / joint {stats['median_rel_err']:.2f}")
    print(f"fp32 accuracy {accuracy(model, wl):.4f}")
    print(f"{'target':>6} {'dp distortion':>13} {'uniform':>8} {'ratio':>6} {'dp acc':>7} {'uniform acc':>11}")
    for target in (0.5, 0.6, 0.7, 0.8, 0.9):
        alloc = allocate_pruning(layers, curves, DEFAULT_RATIOS, target)
        uni = {l.name: target for l in layers}
        d_dp, d_uni = joint_distortion(wl, alloc, model), joint_distortion(wl, uni, model)
        a_dp = accuracy(apply(model, pruning_policy(layers, alloc)), wl)
        a_uni = accuracy(apply(model, pruning_policy(layers, uni)), wl)
        print(f"{target:>6.0%} {d_dp:>13.2f} {d_uni:>8.2f} {d_dp / d_uni:>6.2f} {a_dp:>7.4f} {a_uni:>11.4f}")


if __name__ == "__main__":
    main()
