"""QAT's quantizers with steps that are either learned (LSQ, Esser et al. 2020) or follow rtn.

:class:`QuantWeight` is a weight parametrization: the forward pass sees the pruned, quantized
weight ``s * (Q(w / s + z) - z)`` through an estimator (:mod:`._estimators`). Its steps ``s``
are one per output channel or per group of the choice (``[N, G]``), zero points fixed:

- ``learn=True``: ``s`` is a parameter, initialised from the PTQ (rtn) result of the float weight
  (BitNet's mean/median |w| for ternary, mean |w| for binary, BiViT's learnable channel scales),
  with LSQ's gradient scale ``1 / sqrt(N * Q_P)`` (``N`` weights share a step).
- ``learn=False``: ``s`` and ``z`` are rtn's of the current latent weight at every step (as the
  plain STE has always done), only the estimator differs.

The pruning mask (and PB-LLM's salient mask, :mod:`._binary`) is computed once from the float
weight, as :func:`autocomp.quant.compress_weight` does, and held fixed. :meth:`QuantWeight.bake`
gives the final weight and its steps: codes in range, one step per channel or group.

:class:`ActQuant` is the per-tensor affine input quantizer with a learnable step (zero point
fixed) initialised from the calibrated range; :meth:`ActQuant.frozen` turns the learned step back
into a calibrated-range hook (:class:`autocomp.policy.ActFakeQuant`), the format PTQ stores.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> qw = QuantWeight(torch.randn(4, 8), Choice(2, 32), learn=True)
    >>> w_hat, steps, zeros = qw.bake(torch.randn(4, 8))
    >>> tuple(steps.shape), bool(((w_hat / steps).round() - w_hat / steps).abs().max() < 1e-4)
    ((4, 1), True)
"""
from __future__ import annotations

import torch

from autocomp.evaluators._binary import expand, salient_8bit, salient_mask, ternary_scales
from autocomp.evaluators._estimators import Estimator, Grid, fake_quant, lsq_gscale
from autocomp.policy import ActFakeQuant, Choice
from autocomp.quant import TERNARY_BITS, act_qparams, is_float, prune_mask, quantize_weight_groups


def is_sub2bit(bits: float) -> bool:
    """1 (binary) or 1.58 (ternary) bits."""
    return bits == 1 or abs(bits - TERNARY_BITS) < 1e-6


def weight_grid(choice: Choice) -> Grid:
    """The codes a weight choice stores."""
    if choice.w_bits == 1:
        return Grid(binary=True)
    if abs(choice.w_bits - TERNARY_BITS) < 1e-6:
        return Grid(-1, 1)
    b = int(round(choice.w_bits))
    return Grid(0, 2**b - 1) if choice.zero_point else Grid(-(2 ** (b - 1)), 2 ** (b - 1) - 1)


class QuantWeight(torch.nn.Module):
    """Weight parametrization (module layout in, module layout out); see the module docstring.

    Args:
        weight: the float weight the masks and initial steps come from (module layout).
        choice: the layer's choice (bits, prune, group, zero point).
        transposed: the module stores ``[in, out]`` (transformers' ``Conv1D``).
        est: the estimator of the weights' rounding.
        learn: learn the steps (LSQ) instead of following rtn.
        ternary_scale: ``mean`` or ``median`` for 1.58-bit steps.
        salient: PB-LLM fraction kept at 8 bits (1/1.58-bit choices; 0 = none).
    """

    def __init__(self, weight: torch.Tensor, choice: Choice, transposed: bool = False,
                 est: Estimator = Estimator("ste"), learn: bool = False, ternary_scale: str = "mean",
                 salient: float = 0.0):
        super().__init__()
        self.choice, self.transposed, self.ternary_scale = choice, transposed, ternary_scale
        # binary weights keep every latent weight's gradient (no |u| <= 1 clip), as the plain STE did
        self.est = Estimator(est.kind, est.power, est.clamp, est.freq, clip=choice.w_bits != 1)
        self.learn, self.shape = learn, tuple((weight.t() if transposed else weight).shape)
        flat = self._flat(weight.detach().float())
        self.register_buffer("mask", prune_mask(flat, choice.prune) if choice.prune > 0 else None)
        sal = None
        if salient > 0 and is_sub2bit(choice.w_bits):
            sal = salient_mask(self._masked(flat), salient)
        self.register_buffer("sal", sal)
        if is_float(choice.w_bits):
            self.grid, self.scale = None, None
            self.register_buffer("zero", None)
            return
        self.grid = weight_grid(choice)
        s, z = self.steps(flat)
        self.scale = torch.nn.Parameter(s.clone()) if learn else None
        # rtn's symmetric steps may be negative (the grid's lopsided end on a positive extreme,
        # autocomp.quant._symmetric_scales): the learned step keeps its initial sign
        self.register_buffer("scale_sign", torch.where(s < 0, -1.0, 1.0) if learn else None)
        self.register_buffer("zero", z)
        k = flat.shape[1]
        self.gscale = lsq_gscale(min(int(choice.group), k) if choice.group is not None else k, self.grid)

    def _flat(self, w: torch.Tensor) -> torch.Tensor:
        return (w.t() if self.transposed else w).reshape(self.shape[0], -1)

    def _masked(self, flat: torch.Tensor) -> torch.Tensor:
        return flat if self.mask is None else flat * self.mask

    def steps(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rtn's steps ``[N, G]`` (and zero points) of the pruned ``flat`` weight, under this
        choice's ternary scale and salient mask."""
        c, x = self.choice, self._masked(flat.detach().float())
        if abs(c.w_bits - TERNARY_BITS) < 1e-6 and (self.ternary_scale == "median" or self.sal is not None):
            return ternary_scales(x, c.group, self.ternary_scale, None if self.sal is None else ~self.sal), None
        if c.w_bits == 1 and self.sal is not None:
            return ternary_scales(x, c.group, "mean", ~self.sal), None     # mean |w| of the rest
        gq = quantize_weight_groups(x, c.w_bits, c.group, c.zero_point)
        return gq.scales, gq.zeros

    def quantize(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(the compressed ``[N, K]`` weight, its steps ``[N, G]``, zero points) of a latent weight."""
        x = self._masked(flat)
        if self.grid is None:
            return x, None, None
        if self.learn:
            s, z = self.scale_sign * self.scale.abs().clamp_min(1e-8), self.zero
        else:
            s, z = self.steps(flat)
        k, g = x.shape[1], self.choice.group
        zz = None if z is None else expand(z, k, g)
        out = fake_quant(x, expand(s, k, g), self.grid, self.est, zz, self.gscale)
        if self.sal is not None:
            out = torch.where(self.sal, salient_8bit(x, self.sal), out)
        return (out if self.mask is None else out * self.mask), s, z

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = self.quantize(self._flat(w))[0].reshape(self.shape)
        return out.t() if self.transposed else out

    def bake(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The final weight (module layout) of latent ``w``, with its ``[N, G]`` steps and zeros."""
        with torch.no_grad():
            out, s, z = self.quantize(self._flat(w))
            out = out.reshape(self.shape)
            return (out.t() if self.transposed else out), (None if s is None else s.detach()), z


class ActQuant(torch.nn.Module):
    """Per-tensor affine input quantizer with a learnable step (LSQ); zero point fixed."""

    def __init__(self, lo: float, hi: float, bits: int):
        super().__init__()
        scale, zp, qmin, qmax = act_qparams(lo, hi, bits)
        self.grid, self.zp, self.bits = Grid(qmin, qmax), float(zp), int(bits)
        self.step = torch.nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.step.abs().clamp_min(1e-8)
        z = torch.tensor(self.zp, dtype=x.dtype, device=x.device)
        return fake_quant(x, s, self.grid, Estimator("ste"), z, lsq_gscale(x[0].numel(), self.grid))

    def hook(self, module: torch.nn.Module, args: tuple) -> tuple:
        return (self(args[0]),) + tuple(args[1:])

    def frozen(self) -> ActFakeQuant:
        """The learned step as the calibrated range it stands for (the same codes and zero point)."""
        s = float(self.step.detach().abs().clamp_min(1e-8))
        return ActFakeQuant(-self.zp * s, (self.grid.qmax - self.zp) * s, self.bits)
