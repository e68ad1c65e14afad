"""Turning a per-layer score into per-(layer, choice) sensitivities for scale-free proxies.

Scores such as SNIP saliency, SynFlow or LRP relevance are not second-order loss estimates, so
they are multiplied by the choice's *relative* perturbation (weights and input activation):
omega(l, c) = s_l * (||C(W) - W||^2 / ||W||^2 + MSE_act(c.a_bits) / E[x^2]).
"""
from __future__ import annotations

from typing import Sequence

from autocomp.policy import weight_of
from autocomp.proxies._base import Sensitivity
from autocomp.proxies.zero_cost import act_mse, act_stats_if_needed, choice_perturbations
from autocomp.quant import is_float


def relative_omega(layers: Sequence, space, model, calib, scores: dict[str, float], proxy: str) -> Sensitivity:
    """Sensitivity from layer scores times relative compression errors.

    Example:
        >>> sens = relative_omega(layers, space, wl.model(), wl.calib, {"fc": 1.0}, "mine")  # doctest: +SKIP
    """
    mods = dict(model.named_modules())
    choices = space.choices(layers)
    stats = act_stats_if_needed(model, layers, calib, choices)
    omega = {}
    for l in layers:
        n = l.name
        w2 = float((weight_of(mods[n]).detach().float() ** 2).sum()) or 1.0
        deltas = choice_perturbations(mods[n], choices[n])
        row = {}
        for c in choices[n]:
            rel = float((deltas[c.key] ** 2).sum()) / w2
            if not is_float(c.a_bits) and n in stats:
                lo, hi, sample = stats[n]
                x2 = float((sample.float() ** 2).mean()) if sample.numel() else 0.0
                rel += act_mse(sample, lo, hi, int(c.a_bits)) / (x2 or 1.0)
            row[c.key] = max(float(scores.get(n, 0.0)), 0.0) * rel
        omega[n] = row
    return Sensitivity(proxy, omega, {n: float(scores.get(n, 0.0)) for n in (l.name for l in layers)})
