"""Calibration: per-layer input activation statistics and ranges for activation quantization."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from autocomp.profile import _call
from autocomp.quant import choose_act_range, is_float

_SAMPLE = 16384  # values kept per layer for the MSE clip search


def activation_stats(model: torch.nn.Module, names: Iterable[str], batches: Sequence[tuple[Any, Any]],
                     seed: int = 0) -> dict[str, tuple[float, float, torch.Tensor]]:
    """Min, max and a random sample of each named layer's input over the calibration batches."""
    names = list(names)
    mods = dict(model.named_modules())
    stats: dict[str, list] = {n: [float("inf"), float("-inf"), []] for n in names}
    g = torch.Generator().manual_seed(seed)

    def hook_for(n: str):
        def hook(mod, args):
            x = args[0].detach().float()
            s = stats[n]
            s[0] = min(s[0], float(x.min()))
            s[1] = max(s[1], float(x.max()))
            flat = x.flatten()
            k = min(flat.numel(), _SAMPLE // max(len(batches), 1) + 1)
            s[2].append(flat[torch.randint(flat.numel(), (k,), generator=g)])
        return hook

    handles = [mods[n].register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        model.eval()
        with torch.no_grad():
            for x, _ in batches:
                _call(model, x)
    finally:
        for h in handles:
            h.remove()
    return {n: (s[0], s[1], torch.cat(s[2]) if s[2] else torch.zeros(0)) for n, s in stats.items()}


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
