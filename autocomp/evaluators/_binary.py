"""1- and 1.58-bit specifics of QAT: ternary scales, PB-LLM salient weights, binary activations.

- Ternary (BitNet b1.58): codes ``clamp(round(w / s), -1, 1)`` with ``s`` the mean |w| (``mean``,
  as :func:`autocomp.quant.ternarize_weight`) or the median |w| (``median``) of each channel or
  group. The median ignores the heavy tail, so it is smaller and fewer weights round to 0.
- Salient weights (PB-LLM): a fraction of a 1/1.58-bit layer's weights, the largest |w| of the
  float weight (chosen once, like a pruning mask), kept at 8 bits (symmetric, per output channel,
  step = the channel's largest salient |w| / 127); the rest is binarized/ternarized with scales
  computed over the non-salient weights only. A policy's cost is that of the plain choice; an
  evaluation that keeps salient weights is stored at its true cost, the 8-bit values, their
  scales and positions counted (:mod:`autocomp.salient`).
- Binary activations (``a_bits=1``): ``y = m + s * sign(x - t)``, with a learnable threshold ``t``
  and scale ``s`` per layer and the fixed centre ``m``, all initialised from PTQ's calibrated
  1-bit range (levels ``m - s`` and ``m + s``, threshold between them), so that training starts
  from the PTQ model; backward is the clipped STE of ``sign`` (``|x - t| <= s``).

Example:
    >>> import torch
    >>> w = torch.tensor([[0.1, -0.2, 0.3, -2.0, 0.4]])
    >>> round(ternary_scales(w, None, "mean").item(), 4), round(ternary_scales(w, None, "median").item(), 4)
    (0.6, 0.3)
"""
from __future__ import annotations

import torch

from autocomp.evaluators._estimators import Estimator, Grid, fake_quant, lsq_gscale
from autocomp.quant import act_qparams

SALIENT_BITS = 8
TERNARY_SCALES = ("mean", "median")


def group_view(flat: torch.Tensor, group: int | None) -> torch.Tensor:
    """``[N, K]`` as ``[N, G, g]`` groups, the shorter last group padded with NaN."""
    n, k = flat.shape
    g = k if group is None else min(int(group), k)
    groups = -(-k // g)
    pad = groups * g - k
    if pad:
        flat = torch.cat([flat, flat.new_full((n, pad), float("nan"))], dim=1)
    return flat.reshape(n, groups, g)


def expand(t: torch.Tensor, k: int, group: int | None) -> torch.Tensor:
    """A per-group ``[N, G]`` tensor repeated to ``[N, K]`` (as :class:`autocomp.quant.GroupQuant`)."""
    g = k if group is None else min(int(group), k)
    return t.repeat_interleave(g, dim=1)[:, :k]


def ternary_scales(flat: torch.Tensor, group: int | None, how: str = "mean",
                   keep: torch.Tensor | None = None) -> torch.Tensor:
    """BitNet b1.58's step per channel or group: the mean or median |w| (over ``keep`` when given)."""
    a = flat.detach().abs().float()
    if keep is not None:
        a = torch.where(keep, a, torch.full_like(a, float("nan")))
    v = group_view(a, group)
    s = v.nanmedian(dim=2).values if how == "median" else v.nanmean(dim=2)
    return torch.nan_to_num(s, nan=0.0).clamp_min(1e-12)


def salient_mask(flat: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``fraction`` of ``flat`` with the largest |w| (exactly ``round(fraction * numel)`` of them)."""
    n = flat.numel()
    k = int(round(fraction * n))
    out = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k > 0:
        out[flat.detach().abs().flatten().topk(k).indices] = True
    return out.reshape(flat.shape)


def salient_8bit(flat: torch.Tensor, sal: torch.Tensor) -> torch.Tensor:
    """The salient weights at 8 bits per output channel (straight-through), zero elsewhere."""
    qmax = 2 ** (SALIENT_BITS - 1) - 1
    x = flat * sal
    step = (x.detach().abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-12)
    q = (x.detach() / step).round().clamp(-qmax, qmax) * step
    return x + (q - x).detach()


class BinaryAct(torch.nn.Module):
    """``y = m + s * sign(x - t)`` with learnable ``t`` and ``s`` (see the module docstring)."""

    def __init__(self, lo: float, hi: float):
        super().__init__()
        scale, zp, _, _ = act_qparams(lo, hi, 1)
        low, high = -zp * scale, (1 - zp) * scale          # PTQ's two 1-bit levels
        self.centre = (low + high) / 2
        self.threshold = torch.nn.Parameter(torch.tensor(float(self.centre)))
        self.scale = torch.nn.Parameter(torch.tensor(float((high - low) / 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale.abs().clamp_min(1e-8)
        grid, est = Grid(binary=True), Estimator("ste", clip=True)
        return self.centre + fake_quant(x - self.threshold, s, grid, est, gscale=lsq_gscale(x[0].numel(), grid))

    def hook(self, module: torch.nn.Module, args: tuple) -> tuple:
        return (self(args[0]),) + tuple(args[1:])

    def frozen(self) -> "FixedBinaryAct":
        """The learned activation as a plain (picklable) pre-hook for the scored model."""
        return FixedBinaryAct(self.centre, float(self.scale.detach().abs()), float(self.threshold.detach()))


class FixedBinaryAct:
    """Forward pre-hook ``x -> centre + scale * sign(x - threshold)`` (ties go to ``+``)."""

    def __init__(self, centre: float, scale: float, threshold: float):
        self.centre, self.scale, self.threshold = float(centre), float(scale), float(threshold)

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        sign = torch.where(x >= self.threshold, 1.0, -1.0).to(x.dtype)
        return (self.centre + self.scale * sign,) + tuple(args[1:])
