"""Turning per-layer scores into per-(layer, choice) sensitivities.

Second-order proxies (Hessian trace, top eigenvalue) give HAWQ-V2's
omega(l, c) = Tr(H_W)/n * ||C(W) - W||^2 + Tr(H_x) * MSE_act(c.a_bits) (:func:`hawq_omega`),
with ``C`` the quantizer that will be used (:mod:`autocomp.proxies._perturb`).

Scores such as SNIP saliency, SynFlow or LRP relevance are not second-order loss estimates, so
they are multiplied by the choice's *relative* perturbation (weights and input activation):
omega(l, c) = s_l * (||C(W) - W||^2 / ||W||^2 + MSE_act(c.a_bits) / E[x^2]).
"""
from __future__ import annotations

from typing import Sequence

from autocomp.modules import weight_of
from autocomp.proxies._base import Proxy
from autocomp.proxies._perturb import act_key, perturbation_norms
from autocomp.proxies.zero_cost import act_mse, act_stats_if_needed, omega_table
from autocomp.quant import is_float
from autocomp.sensitivity import Sensitivity

ACT = "act:"  # prefix of the trace block holding a layer's input activation


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


def hawq_omega(layers, space, model, calib, traces: dict[str, float], proxy: str,
               layer_scores: dict[str, float], norms: dict[str, dict[str, float]] | None = None) -> Sensitivity:
    """Omega = Tr(H_W)/n * ||C(W) - W||^2 (+ Tr(H_x) * MSE_act when activations are quantized).

    ``norms[layer][choice key]``: the squared perturbations under a quantizer
    (:func:`autocomp.proxies._perturb.perturbation_norms`); None: round-to-nearest's.
    """
    mods = dict(model.named_modules())
    per_w = {l.name: traces.get(l.name, 0.0) / max(weight_of(mods[l.name]).numel(), 1) for l in layers}

    def term(n, c, sq: float, act) -> float:
        v = per_w[n] * sq
        if act is not None and ACT + n in traces:
            lo, hi, sample = act
            v += max(traces[ACT + n], 0.0) * act_mse(sample, lo, hi, int(c.a_bits))
        return max(v, 0.0)

    if norms is None:
        table = omega_table(layers, space, model, calib, lambda n, c, dw, act: term(n, c, float((dw ** 2).sum()), act))
    else:
        table = _norm_table(layers, space, model, calib, norms, term)
    return Sensitivity(proxy, table, layer_scores)


def _norm_table(layers, space, model, calib, norms, term) -> dict[str, dict[str, float]]:
    """:func:`~autocomp.proxies.zero_cost.omega_table` with the squared perturbations given."""
    choices = space.choices(layers)
    acts = act_stats_if_needed(model, layers, calib, choices)
    def act(n, c):
        return None if is_float(c.a_bits) else acts.get(act_key(n, c))

    return {l.name: {c.key: float(term(l.name, c, norms[l.name][c.key], act(l.name, c))) for c in choices[l.name]}
            for l in layers}


def layer_norms(spec: str, workload, layers, space, names) -> dict[str, dict[str, float]]:
    """The squared perturbations of the layers ``names`` under quantizer ``spec`` (one Ray part)."""
    space = space.bind(layers)   # @first / @last name the model's layers, not the part's
    subset = [l for l in layers if l.name in set(names)]
    return perturbation_norms(spec, workload.model(), subset, space.choices(subset), workload.calib)
