"""``loss_delta``: the measured loss increase when one layer alone takes a choice.

Layer-wise calibration + integer programming (Hubara et al.): each (layer, choice) is applied in
isolation to the float model and the calibration loss is measured; the allocator then sums the
deltas. Cost: one forward pass over the calibration batches per (layer, choice); no gradients.
"""
from __future__ import annotations

import torch

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.policy import Choice, apply, weight_of
from autocomp.profile import _call
from autocomp.proxies._base import Proxy, Sensitivity
from autocomp.quant import compress_weight, fake_quant_act, is_float


def calibration_loss(model: torch.nn.Module, workload) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in workload.calib:
            total += float(workload.loss(_call(model, x), y)) * int(y.shape[0])
            n += int(y.shape[0])
    return total / max(n, 1)


class LossDeltaProxy(Proxy):
    """omega(l, c) = L(model with only layer l compressed by c) - L(model), on calibration data."""

    name = "loss_delta"

    def score(self, workload, layers, space) -> Sensitivity:
        model = workload.model()
        names = [l.name for l in layers]
        choices = space.choices(layers)
        a_bits = {int(c.a_bits) for cs in choices.values() for c in cs if not is_float(c.a_bits)}
        ranges = activation_ranges(activation_stats(model, names, workload.calib), a_bits)
        base = calibration_loss(model, workload)
        mods = dict(model.named_modules())
        omega, scores = {}, {}
        for l in layers:
            mod = mods[l.name]
            w0 = mod.weight.detach().clone()
            row = {}
            for c in choices[l.name]:
                handle = None
                with torch.no_grad():
                    w = compress_weight(weight_of(mod).detach(), c.w_bits, c.prune)
                    mod.weight.copy_(w.t() if type(mod).__name__ == "Conv1D" else w)
                if not is_float(c.a_bits):
                    lo, hi = ranges[l.name][int(c.a_bits)]
                    bits = int(c.a_bits)
                    handle = mod.register_forward_pre_hook(
                        lambda m, a, lo=lo, hi=hi, b=bits: (fake_quant_act(a[0], lo, hi, b),) + tuple(a[1:]))
                try:
                    row[c.key] = max(calibration_loss(model, workload) - base, 0.0)
                finally:
                    if handle is not None:
                        handle.remove()
                    with torch.no_grad():
                        mod.weight.copy_(w0)
            omega[l.name] = row
            scores[l.name] = max(row.values()) if row else 0.0
        return Sensitivity(self.name, omega, scores)
