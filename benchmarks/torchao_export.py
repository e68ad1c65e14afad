"""Latency of one policy on torchao's kernels against autocomp's kernels and fp32, one run.

For each model and uniform policy, :func:`autocomp.kernels.torchao_backend.compare_backends`
builds the float model, autocomp's kernel-backed model (``convert``) and torchao's
(``quantize_`` with the policy's configs), checks each against the simulation, and times the
three alternately on the same batch (median of ``--repeats``), so machine load falls on all
alike. The ratio printed is fp32 latency / backend latency (above 1: faster than float).

    python benchmarks/torchao_export.py --repeats 30
"""
from __future__ import annotations

import argparse
import platform
import warnings

import torch

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.kernels.torchao_backend import compare_backends
from autocomp.modules import activation_layers, quantizable_layers
from autocomp.policy import Choice, Policy
from autocomp.workload import Workload, load_workload

POLICIES = {"w8a8": Choice(8, 8), "w8a32": Choice(8, 32), "w4a32g32": Choice(4, 32, group=32)}


def mlp_workload(width: int = 1024, batch: int = 64) -> Workload:
    """A 4-layer float MLP (random weights): big enough that the GEMMs, not Python, take the time."""
    torch.manual_seed(0)
    layers = []
    for _ in range(4):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).eval()
    calib = [(torch.randn(batch, width), None)]
    return Workload(name=f"mlp{width}", model_factory=lambda: model, calib=calib, eval=calib)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<11} {'policy':<9} {'backend':<9} {'latency ms':>10} {'vs fp32':>8} {'max rel err':>12} {'top-1':>6}")
    for wl in (mlp_workload(), load_workload("autocomp.testing.hf:tiny_bert"), load_workload("digits")):
        model = wl.model()
        names = [n for n, _ in quantizable_layers(model)]
        ranges = activation_ranges(activation_stats(model, [n for n, _ in activation_layers(model)], wl.calib), (8,))
        for label, choice in POLICIES.items():
            cmp = compare_backends(model, Policy.uniform(names, choice), ranges, wl.sample_input(), "cpu", args.repeats)
            fp = cmp.run("fp32").latency
            for r in cmp.runs:
                print(f"{wl.name:<11} {label:<9} {r.backend:<9} {r.latency * 1e3:>10.3f} {fp / r.latency:>7.2f}x "
                      f"{r.max_rel_err:>12.2e} {r.top1_agreement:>6.3f}")
            if cmp.unsupported:
                print(f"{'':<21}torchao kept {len(cmp.unsupported)} of {len(names)} layers float "
                      f"({cmp.unsupported[0].reason.split(':')[0]}, ...)")


if __name__ == "__main__":
    main()
