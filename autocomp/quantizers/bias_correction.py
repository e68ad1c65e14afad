"""``bias_correction``: remove the mean output shift quantization causes (Nagel et al., 2019;
Hubara et al., 2021), and re-estimate BatchNorm statistics; a post-pass for any quantizer.

Per layer, with ``μ`` the float model's mean input row on the calibration data (for a
convolution, the mean unfolded patch over every output position, padding included), the base
quantizer's weight ``Wq`` gets ``bias += (W − Wq) · μ``, so the layer's mean output over those
inputs is exactly the float layer's: for a convolution per output channel, averaged over all
positions. The correction replaces any bias change of the base (the total is ``(W − Wq) · μ``),
a layer without a bias gets one, and embeddings (no input activations) are left alone. The
correction is for the weights' error on float inputs; a quantized input's own shift is not
modelled. Statistics: ``mean``, shared by every policy.

With ``bn_reestimate`` (the default) and calibration batches passed to :meth:`Quantizer.apply`,
every BatchNorm fed directly by a compressed layer of the policy gets its running mean and
variance re-estimated on the compressed model (cumulative average over the batches, BatchNorm in
training mode, as ``torch.optim.swa_utils.update_bn``). A model whose BatchNorms are folded into
the convolutions has none to re-estimate; bias correction alone then recentres the outputs.

Alone, ``bias_correction`` runs after ``rtn``; compose it: ``gptq+bias_correction``.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice, Policy
    >>> from autocomp.quantizers import collect_stats, get_quantizer
    >>> m = torch.nn.Sequential(torch.nn.Linear(16, 4))
    >>> x = torch.randn(512, 16) + 1.0
    >>> q = get_quantizer("rtn+bias_correction")
    >>> small = q.apply(m, Policy.from_choices({"0": Choice(2, 32)}), stats=collect_stats(m, [x], ["0"], q.needs))
    >>> bool(torch.allclose(small(x).mean(0), m(x).mean(0), atol=1e-4))
    True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from autocomp.modules import call_model, inspecting, is_embedding, weight_of
from autocomp.policy import Choice, Policy, policy_modules
from autocomp.quant import is_float
from autocomp.quantizers._base import LayerResult, LayerStats, require_stats
from autocomp.quantizers.compose import PostPass


@dataclass(frozen=True)
class BiasCorrectionOptions:
    """Attributes:
        bn_reestimate: re-estimate the BatchNorms fed by compressed layers (when batches are given).
    """

    bn_reestimate: bool = True


def mean_shift(w: torch.Tensor, wq: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``(W − Wq) · μ`` per output channel: the bias change that keeps the mean output."""
    n = w.shape[0]
    return (w.reshape(n, -1).float() - wq.reshape(n, -1).float()) @ mean.float()


def _inputs(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batchnorms_fed_by(model: torch.nn.Module, names: Iterable[str], inputs: Any) -> list[str]:
    """The BatchNorm modules whose input is the output of one of the layers ``names``, found by
    running ``model`` once on ``inputs`` (so any graph works, not only ``Sequential``)."""
    mods = dict(model.named_modules())
    outputs: list[torch.Tensor] = []  # kept alive so the ids below stay unique during the pass
    fed: list[str] = []

    def record(_m: torch.nn.Module, _a: tuple, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            outputs.append(out)

    def check(bn_name: str):
        def hook(_m: torch.nn.Module, args: tuple) -> None:
            if args and any(args[0] is o for o in outputs) and bn_name not in fed:
                fed.append(bn_name)
        return hook

    handles = [mods[n].register_forward_hook(record) for n in names]
    handles += [m.register_forward_pre_hook(check(n)) for n, m in mods.items()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with inspecting(model, handles):
        call_model(model, inputs)
    return fed


def reestimate_batchnorm(model: torch.nn.Module, bn_names: Iterable[str], batches: Iterable[Any]) -> None:
    """Reset and re-estimate the running statistics of the named BatchNorms over ``batches``
    (the rest of the model stays in eval mode), in place."""
    mods = dict(model.named_modules())
    bns = [mods[n] for n in bn_names]
    if not bns:
        return
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    model.eval()
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: every batch counts the same
            bn.train()
        with torch.no_grad():
            for batch in batches:
                call_model(model, _inputs(batch))
    finally:
        for bn, mom in zip(bns, momenta):
            bn.momentum = mom
        model.train(was_training)


class BiasCorrection(PostPass):
    """Mean-output bias correction per layer, and BatchNorm re-estimation (see the module docstring)."""

    name = "bias_correction"
    Options = BiasCorrectionOptions
    needs = frozenset({"mean"})

    def refine(self, name: str, module: torch.nn.Module, choice: Choice, stats: LayerStats | None,
               result: LayerResult) -> LayerResult:
        w = weight_of(module).detach()
        if is_embedding(module):
            return result
        require_stats(self, name, stats)
        if stats.mean.numel() != w[0].numel():
            return result
        delta = mean_shift(w, result.weight, stats.mean)
        return dataclasses.replace(result, bias_delta=delta.to(w.dtype))

    def finalize(self, model: torch.nn.Module, policy: Policy, batches: Iterable[Any]) -> None:
        batches = list(batches)
        if not self.options.bn_reestimate or not batches:
            return
        compressed = [n for n, c, _ in policy_modules(model, policy) if not is_float(c.w_bits) or c.prune > 0]
        reestimate_batchnorm(model, batchnorms_fed_by(model, compressed, _inputs(batches[0])), batches)
