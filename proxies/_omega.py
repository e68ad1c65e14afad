"""Turning a per-layer score into per-(layer, choice) sensitivities for scale-free proxies.

Scores such as SNIP saliency, SynFlow or LRP relevance are not second-order loss estimates, so
they are multiplied by the choice's *relative* perturbation (weights and input activation):
omega(l, c) = s_l * (||C(W) - W||^2 / ||W||^2 + MSE_act(c.a_bits) / E[x^2]).
"""
from __future__ import annotations

from typing import Sequence

from autocomp.policy import weight_of
from autocomp.proxies._base import Sensitivity
from autocomp.proxies.zero_cost import act_mse, omega_table


def relative_omega(layers: Sequence, space, model, calib, scores: dict[str, float], proxy: str) -> Sensitivity:
    """Sensitivity from layer scores times relative compression errors.

    Example:
        >>> sens = relative_omega(layers, space, wl.model(), wl.calib, {"fc": 1.0}, "mine")  # doctest: +SKIP
    """
    mods = dict(model.named_modules())
    w2 = {l.name: float((weight_of(mods[l.name]).detach().float() ** 2).sum()) or 1.0 for l in layers}

    def term(n, c, dw, act) -> float:
        rel = float((dw ** 2).sum()) / w2[n]
        if act is not None:
            lo, hi, sample = act
            x2 = float((sample.float() ** 2).mean()) if sample.numel() else 0.0
            rel += act_mse(sample, lo, hi, int(c.a_bits)) / (x2 or 1.0)
        return max(float(scores.get(n, 0.0)), 0.0) * rel

    omega = omega_table(layers, space, model, calib, term)
    return Sensitivity(proxy, omega, {n: float(scores.get(n, 0.0)) for n in (l.name for l in layers)})
