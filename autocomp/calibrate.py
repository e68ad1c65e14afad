"""Calibration: per-layer input activation statistics and ranges for activation quantization."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from autocomp.modules import call_model, capture_inputs
from autocomp.quant import choose_act_range, is_float

_SAMPLE = 16384  # values kept per layer for the MSE clip search


def activation_stats(model: torch.nn.Module, names: Iterable[str], batches: Sequence[tuple[Any, Any]],
                     seed: int = 0) -> dict[str, tuple[float, float, torch.Tensor]]:
    """Min, max and a random sample of each named layer's input over the calibration batches."""
    g = torch.Generator().manual_seed(seed)
    per_call = _SAMPLE // max(len(batches), 1) + 1

    def summary(x: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        # Reduced as the model runs: keeping every input would hold whole activations in memory.
        x = x.float()
        flat = x.flatten()
        k = min(flat.numel(), per_call)
        return float(x.min()), float(x.max()), flat[torch.randint(flat.numel(), (k,), generator=g)]

    model.eval()
    with capture_inputs(model, names, transform=summary) as seen, torch.no_grad():
        for x, _ in batches:
            call_model(model, x)
    inf = float("inf")
    # A layer never called keeps (inf, -inf): activation_ranges reads that as "never called".
    return {n: (min([inf, *(c[0] for c in calls)]), max([-inf, *(c[1] for c in calls)]),
                torch.cat([c[2] for c in calls]) if calls else torch.zeros(0)) for n, calls in seen.items()}


def activation_ranges(stats: dict[str, tuple[float, float, torch.Tensor]],
                      bits: Iterable[int]) -> dict[str, dict[int, tuple[float, float]]]:
    """For each layer and activation bit-width, the clipped range minimising quantization MSE."""
    bits = sorted({int(b) for b in bits if not is_float(b)})
    out = {}
    for n, (lo, hi, sample) in stats.items():
        if lo == float("inf"):  # never called in the forward pass
            lo, hi = 0.0, 1.0
        out[n] = {b: choose_act_range(sample, lo, hi, b) for b in bits}
    return out
