"""``rtn``: round-to-nearest, the quantizer every evaluation used before the others existed.

Per output channel or per group, symmetric or asymmetric, with the per-row MSE clip search of
:mod:`autocomp.quant`; magnitude pruning first, pruned weights exactly zero. Needs no statistics.
Bit-identical to :func:`autocomp.policy.apply`.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> from autocomp.quantizers import get_quantizer
    >>> lin = torch.nn.Linear(16, 4)
    >>> w = get_quantizer("rtn").quantize_layer("l", lin, Choice(2, 32), None).weight
    >>> int(torch.unique(w[0]).numel()) <= 4
    True
"""
from __future__ import annotations

import torch

from autocomp.modules import weight_of
from autocomp.policy import Choice
from autocomp.quant import compress_weight
from autocomp.quantizers._base import LayerResult, LayerStats, Quantizer


class RTNQuantizer(Quantizer):
    """Round each weight to the nearest code of its channel's or group's grid."""

    name = "rtn"
    #: the MSE clip search of :mod:`autocomp.quant` (False: the full range, :mod:`.absmax`)
    clip = True

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:
        w = weight_of(module).detach()
        return LayerResult(compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point,
                                           clip=self.clip))
