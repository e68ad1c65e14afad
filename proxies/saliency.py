"""Zero-cost saliency proxies: ``snip``, ``grad_norm`` (one backward pass per calibration chunk)
and ``synflow`` (data-free: one pass with all-ones input through the absolute-valued network).

Each gives a per-layer score; :func:`autocomp.proxies._omega.relative_omega` turns it into a
per-choice sensitivity.

Example:
    >>> from autocomp.proxies import get_proxy
    >>> sens = get_proxy("snip").score(wl, layers, space)   # doctest: +SKIP
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from autocomp.policy import weight_of
from autocomp.profile import _call
from autocomp.proxies._base import Proxy, Sensitivity
from autocomp.proxies._omega import relative_omega
from autocomp.proxies.zero_cost import _chunks


def gradient_stats(workload, names: Sequence[str], chunk: int = 64) -> tuple[dict[str, float], dict[str, float]]:
    """Per layer: SNIP saliency sum|g * W| and gradient norm ||g||, averaged over chunks."""
    model = workload.model()
    mods = dict(model.named_modules())
    saved = {p: p.requires_grad for p in model.parameters()}
    snip = {n: 0.0 for n in names}
    gnorm = {n: 0.0 for n in names}
    count = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        params = [mods[n].weight for n in names]
        for p in params:
            p.requires_grad_(True)
        for x, y in workload.calib:
            for xs, ys in _chunks(x, y, chunk):
                grads = torch.autograd.grad(workload.loss(_call(model, xs), ys), params, allow_unused=True)
                for n, p, g in zip(names, params, grads):
                    if g is not None:
                        snip[n] += float((g * p.detach()).abs().sum())
                        gnorm[n] += float(g.norm())
                count += 1
    finally:
        for p, r in saved.items():
            p.requires_grad_(r)
    count = max(count, 1)
    return {n: v / count for n, v in snip.items()}, {n: v / count for n, v in gnorm.items()}


def synflow_scores(model: torch.nn.Module, sample, names: Sequence[str]) -> dict[str, float]:
    """SynFlow: sum(dR/dW * W) with R = sum of the output of |W|-network on an all-ones input.

    Runs in float64 on a copy (the product of absolute weights overflows float32 in deep nets).
    Non-float inputs (token ids) are passed as they are.
    """
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.abs_()
    mods = dict(m.named_modules())
    for p in m.parameters():
        p.requires_grad_(False)
    params = [mods[n].weight for n in names]
    for p in params:
        p.requires_grad_(True)

    def ones(x):
        if isinstance(x, torch.Tensor):
            return torch.ones_like(x[:1], dtype=torch.float64) if x.is_floating_point() else x[:1]
        if isinstance(x, dict):
            return {k: ones(v) for k, v in x.items()}
        return type(x)(ones(v) for v in x)

    out = _call(m, ones(sample))
    out = out if isinstance(out, torch.Tensor) else getattr(out, "logits", out[0])
    grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
    return {n: float((g * p.detach()).sum()) if g is not None else 0.0 for n, p, g in zip(names, params, grads)}


class SnipProxy(Proxy):
    """SNIP: connection saliency sum|dL/dW * W| per layer."""

    name = "snip"

    def score(self, workload, layers, space) -> Sensitivity:
        names = [l.name for l in layers]
        snip, _ = gradient_stats(workload, names, int(self.options.get("chunk", 64)))
        return relative_omega(layers, space, workload.model(), workload.calib, snip, self.name)


class GradNormProxy(Proxy):
    """Gradient norm ||dL/dW|| per layer."""

    name = "grad_norm"

    def score(self, workload, layers, space) -> Sensitivity:
        names = [l.name for l in layers]
        _, gn = gradient_stats(workload, names, int(self.options.get("chunk", 64)))
        mods = dict(workload.model().named_modules())
        # ||g|| * ||W|| gives the first-order loss change scale of a relative perturbation.
        scores = {n: gn[n] * float(weight_of(mods[n]).detach().norm()) for n in names}
        return relative_omega(layers, space, workload.model(), workload.calib, scores, self.name)


class SynflowProxy(Proxy):
    """SynFlow (data-free): synaptic flow sum(dR/dW * W) per layer."""

    name = "synflow"

    def score(self, workload, layers, space) -> Sensitivity:
        names = [l.name for l in layers]
        scores = synflow_scores(workload.model(), workload.sample_input(), names)
        return relative_omega(layers, space, workload.model(), workload.calib, scores, self.name)
