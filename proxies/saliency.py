"""Zero-cost saliency proxies: ``snip``, ``grad_norm`` (one backward pass per calibration chunk)
and ``synflow`` (data-free: one pass with all-ones input through the absolute-valued network).

Each gives a per-layer score (:class:`autocomp.proxies._omega.LayerScoreProxy`), which
:func:`autocomp.proxies._omega.relative_omega` turns into a per-choice sensitivity.

Example:
    >>> from autocomp.proxies import get_proxy
    >>> sens = get_proxy("snip").score(wl, layers, space)   # doctest: +SKIP
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from autocomp.modules import call_model, weight_of
from autocomp.proxies._omega import LayerScoreProxy
from autocomp.proxies._options import ChunkOptions
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
                grads = torch.autograd.grad(workload.loss(call_model(model, xs), ys), params, allow_unused=True)
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
    """SynFlow: sum |dR/dW * W| with R = sum of the output of the |W|-network on an all-ones input.

    Runs in float64 on a copy (the product of absolute weights overflows float32 in deep nets).

    Inputs: float inputs become ones (one sample). Integer inputs -- token ids and attention
    masks of a transformer -- have no all-ones analogue (ones would be token 1 everywhere, and
    zeros a fully masked sequence), so they are the first sample's own ids and mask: on token
    models the score is data-free in the weights, not in the tokens, and the embedding rows
    those ids select are the ones scored.

    The connection saliencies are summed in magnitude: in a ReLU network without normalisation
    every one is non-negative already (the |W|-network's flow is positive), and LayerNorm
    centring or GELU's negative lobe (transformers) would otherwise let signs cancel.
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

    out = call_model(m, ones(sample))
    out = out if isinstance(out, torch.Tensor) else getattr(out, "logits", out[0])
    grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
    return {n: float((g * p.detach()).abs().sum()) if g is not None else 0.0 for n, p, g in zip(names, params, grads)}


class SnipProxy(LayerScoreProxy):
    """SNIP: connection saliency sum|dL/dW * W| per layer. Options: ``chunk`` (default 64)."""

    name = "snip"
    Options = ChunkOptions

    def layer_scores(self, workload, names: Sequence[str]) -> dict[str, float]:
        return gradient_stats(workload, names, self.config.chunk)[0]


class GradNormProxy(LayerScoreProxy):
    """Gradient norm ||dL/dW|| per layer. Options: ``chunk`` (default 64)."""

    name = "grad_norm"
    Options = ChunkOptions

    def layer_scores(self, workload, names: Sequence[str]) -> dict[str, float]:
        _, gn = gradient_stats(workload, names, self.config.chunk)
        mods = dict(workload.model().named_modules())
        # ||g|| * ||W|| gives the first-order loss change scale of a relative perturbation.
        return {n: gn[n] * float(weight_of(mods[n]).detach().norm()) for n in names}


class SynflowProxy(LayerScoreProxy):
    """SynFlow (data-free): synaptic flow sum |dR/dW * W| per layer (see :func:`synflow_scores`)."""

    name = "synflow"

    def layer_scores(self, workload, names: Sequence[str]) -> dict[str, float]:
        return synflow_scores(workload.model(), workload.sample_input(), names)
