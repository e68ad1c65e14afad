"""``loss_delta``: the measured loss increase when one layer alone takes a choice.

Layer-wise calibration + integer programming (Hubara et al.): each (layer, choice) is applied in
isolation to the float model and the calibration loss is measured; the allocator then sums the
deltas. Cost: one forward pass over the calibration batches per (layer, choice); no gradients.

``quantizer``: the quantizer whose weights (and bias correction) each (layer, choice) takes, as
the evaluation will apply them (``rtn`` by default; ``gptq``, ``awq+bias_correction``, ...). Its
calibration statistics are collected once per part, from the float model.

Example:
    >>> from autocomp.proxies import get_proxy
    >>> sens = get_proxy("loss_delta", quantizer="gptq").score(wl, layers, space)   # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.modules import call_model, set_weight
from autocomp.policy import ActFakeQuant, compress_layer, input_range
from autocomp.proxies._base import Part, Proxy, layer_groups
from autocomp.proxies._options import at_least
from autocomp.proxies._perturb import Perturber, check_spec, is_default
from autocomp.quantizers import add_bias
from autocomp.quant import is_float
from autocomp.sensitivity import Sensitivity


def calibration_loss(model: torch.nn.Module, workload) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in workload.calib:
            total += float(workload.loss(call_model(model, x), y)) * int(y.shape[0])
            n += int(y.shape[0])
    return total / max(n, 1)


class LossDeltaProxy(Proxy):
    """omega(l, c) = L(model with only layer l compressed by c) - L(model), on calibration data.

    Options: ``groups`` (layer groups the work is split into, default 4), ``quantizer`` (the
    spec each layer is quantized with, default ``rtn``). Each layer is measured alone, so a
    group's result does not depend on the other groups.
    """

    name = "loss_delta"

    @dataclass(frozen=True)
    class Options:
        groups: int = 4
        quantizer: str = "rtn"

        def __post_init__(self) -> None:
            at_least(self, groups=1)
            check_spec(self.quantizer)

    def parts(self, workload, layers, space) -> list[Part]:
        return layer_groups(layers, self.config.groups)

    def score_part(self, workload, layers, space, part: Part) -> dict[str, Any]:
        # Bound to the whole model first: @first / @last must name its layers, not the group's.
        space = space.bind(layers)
        subset = [l for l in layers if l.name in set(part.layers)]
        return self._measure(workload, subset, space).to_dict()

    def combine(self, workload, layers, space, results) -> Sensitivity:
        omega = {n: r for res in results for n, r in res["omega"].items()}
        scores = {n: v for res in results for n, v in res["layer_scores"].items()}
        # The profile's layer order, whatever the grouping.
        order = [l.name for l in layers]
        return Sensitivity(self.name, {n: omega[n] for n in order if n in omega},
                           {n: scores[n] for n in order if n in scores})

    def _measure(self, workload, layers, space) -> Sensitivity:
        model = workload.model()
        names = [l.name for l in layers]
        choices = space.choices(layers)
        a_bits = {int(c.a_bits) for cs in choices.values() for c in cs if not is_float(c.a_bits)}
        ranges = activation_ranges(activation_stats(model, names, workload.calib), a_bits)
        base = calibration_loss(model, workload)
        mods = dict(model.named_modules())
        quantized = None if is_default(self.config.quantizer, space) else Perturber(
            self.config.quantizer, model, names, workload.calib, weigh=False, choices=[c for cs in choices.values() for c in cs])
        omega, scores = {}, {}
        for l in layers:
            mod = mods[l.name]
            w0 = mod.weight.detach().clone()
            b0 = None if getattr(mod, "bias", None) is None else mod.bias.detach().clone()
            row = {}
            for c in choices[l.name]:
                rng = input_range(ranges, l.name, c)
                handle = compress_layer(mod, c, rng) if quantized is None else _quantize(quantized, l.name, mod, c, rng)
                try:
                    row[c.key] = max(calibration_loss(model, workload) - base, 0.0)
                finally:
                    if handle is not None:
                        handle.remove()
                    with torch.no_grad():
                        mod.weight.copy_(w0)
                    _restore_bias(mod, b0)
            omega[l.name] = row
            scores[l.name] = max(row.values()) if row else 0.0
        return Sensitivity(self.name, omega, scores)


def _quantize(perturber: Perturber, name: str, mod: torch.nn.Module, choice, rng):
    """:func:`autocomp.policy.compress_layer` with the perturber's quantizer (bias correction included)."""
    res = perturber.result(name, mod, choice)
    if res is not None:
        set_weight(mod, res.weight.to(mod.weight.dtype))
        if res.bias_delta is not None:
            add_bias(mod, res.bias_delta)
    return None if rng is None else mod.register_forward_pre_hook(ActFakeQuant(rng[0], rng[1], int(choice.a_bits)))


def _restore_bias(mod: torch.nn.Module, b0: torch.Tensor | None) -> None:
    """Undo a bias correction: the saved bias, or none again when the layer had none."""
    if b0 is None:
        if getattr(mod, "bias", None) is not None:
            mod.bias = None
        return
    with torch.no_grad():
        mod.bias.copy_(b0)
