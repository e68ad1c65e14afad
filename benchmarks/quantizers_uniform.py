"""Whole-model accuracy of each quantizer at a uniform weight-only policy, against rtn.

For each workload (default ``digits``; ``digits-vit`` with ``--models``) and each uniform choice
(per-channel 2, 3 and 4 bits, and 3 bits in groups of 16 with zero points), every quantizer
(``rtn``, ``awq``, ``adaround``, ``gptq`` when registered) alone and composed with
``bias_correction`` compresses every layer via ``Quantizer.apply`` (statistics from one
``collect_stats`` over the calibration batches, shared by all; the same batches for BatchNorm
re-estimation), then the workload's own ``evaluate`` scores it. Columns: the quality metric, its
ratio to rtn's at the same choice (higher is better for accuracy), and seconds for ``apply``.

    python benchmarks/quantizers_uniform.py [--models digits digits-vit] [--bits 2 3 4]
        [--quantizers rtn awq adaround gptq] [--no-groups]
"""
from __future__ import annotations

import argparse
import time

import torch

from autocomp.modules import quantizable_layers
from autocomp.policy import Choice, Policy
from autocomp.quantizers import STATS, collect_stats, get_quantizer, list_quantizers
from autocomp.workload import load_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["digits"])
    ap.add_argument("--bits", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--quantizers", nargs="+", default=["rtn", "awq", "adaround", "gptq"])
    ap.add_argument("--no-groups", action="store_true", help="skip the w3 g16 zero-point rows")
    args = ap.parse_args()
    torch.manual_seed(0)
    bases = ["rtn"] + [b for b in args.quantizers if b in list_quantizers() and b != "rtn"]
    specs = [s for b in bases for s in (b, f"{b}+bias_correction")]
    choices = [Choice(b, 32) for b in args.bits] + ([] if args.no_groups else [Choice(3, 32, group=16, zero_point=True)])
    for spec_name in args.models:
        wl = load_workload(spec_name)
        model = wl.model()
        names = [n for n, _ in quantizable_layers(model)]
        t = time.perf_counter()
        stats = collect_stats(model, wl.calib, names, STATS)
        print(f"\n{spec_name}: float {wl.evaluate(model):.4f}, {len(names)} layers, "
              f"statistics {time.perf_counter() - t:.2f} s (once, shared by every row)")
        print("| choice | quantizer | quality | / rtn | apply s |")
        print("|---|---|---|---|---|")
        for c in choices:
            policy = Policy.uniform(names, c)
            base = None
            for spec in specs:
                q = get_quantizer(spec)
                t = time.perf_counter()
                small = q.apply(model, policy, stats=stats, batches=wl.calib)
                dt = time.perf_counter() - t
                val = wl.evaluate(small)
                base = val if spec == "rtn" else base
                print(f"| {c.key} | {spec} | {val:.4f} | {val / base:.3f} | {dt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
