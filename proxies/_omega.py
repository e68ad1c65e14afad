"""Turning a per-layer score into per-(layer, choice) sensitivities for scale-free proxies.

Scores such as SNIP saliency, SynFlow or LRP relevance are not second-order loss estimates, so
they are multiplied by the choice's *relative* perturbation (weights and input activation):
omega(l, c) = s_l * (||C(W) - W||^2 / ||W||^2 + MSE_act(c.a_bits) / E[x^2]).
"""
from __future__ import annotations

from typing import Sequence

from autocomp.modules import weight_of
from autocomp.proxies._base import Proxy
from autocomp.proxies.zero_cost import act_mse, omega_table
from autocomp.sensitivity import Sensitivity


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


class LayerScoreProxy(Proxy):
    """A proxy that scores each layer once (implement :meth:`layer_scores`); the sensitivity is
    that score times each choice's relative perturbation (:func:`relative_omega`).

    Example:
        >>> class Ones(LayerScoreProxy):
        ...     name = "ones"
        ...     def layer_scores(self, workload, names):
        ...         return {n: 1.0 for n in names}
        >>> Ones().score(wl, layers, space).layer_scores   # doctest: +SKIP
    """

    def layer_scores(self, workload, names: Sequence[str]) -> dict[str, float]:
        raise NotImplementedError  # pragma: no cover - abstract

    def score(self, workload, layers: Sequence, space) -> Sensitivity:
        scores = self.layer_scores(workload, [l.name for l in layers])
        return relative_omega(layers, space, workload.model(), workload.calib, scores, self.name)
