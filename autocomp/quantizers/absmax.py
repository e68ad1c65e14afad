"""``absmax``: round-to-nearest on the full range, no clip search (the signed absmax grid).

Each channel's or group's scale puts its largest-magnitude weight exactly on the grid's extra
code ``-2^(b-1)`` (:func:`autocomp.quant.signed_absmax_scale`; NNCF's INT4_SYM and most LLM
weight compressors round this way); asymmetric choices take the full min..max range. Nothing is
clipped, so outliers are kept exactly, at the price of a coarser step for the rest of the row.
rtn instead picks, per row, the clipped range with the smallest weight MSE: which of the two is
better depends on the model and the bits (BENCHMARKS.md "Signed symmetric grids": absmax wins in
8 of 9 uniform policies on ``digits``, ``digits-vit`` and ``tiny-lm``, rtn on ``digits-vit`` at
4 bits). Usable per layer beside rtn (``quantizer: [rtn, absmax]``), though with ``quant_mse``
scoring that mix measured worse than either alone on ``digits``: a study quantizer
(``--quantizer absmax``) is the better use.
Magnitude pruning first, as rtn; binary and ternary choices are rtn's (their grids have no clip).
Needs no statistics.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> from autocomp.quantizers import get_quantizer
    >>> lin = torch.nn.Linear(16, 4)
    >>> w = get_quantizer("absmax").quantize_layer("l", lin, Choice(3, 32), None).weight
    >>> bool(torch.equal(w.abs().amax(dim=1), lin.weight.abs().amax(dim=1)))   # extremes kept exactly
    True
"""
from __future__ import annotations

from autocomp.quantizers.rtn import RTNQuantizer


class AbsmaxQuantizer(RTNQuantizer):
    """rtn on the full-range grid: each channel's or group's extreme weight on the extra code."""

    name = "absmax"
    clip = False
