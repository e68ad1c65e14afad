"""Gradient estimators of QAT: a quantizer's forward is a staircase, its backward a surrogate slope.

One autograd function, :class:`FakeQuant`, computes ``y = s * (Q(x / s + z) - z)`` on a code grid
(:class:`Grid`: signed or unsigned integers ``qmin..qmax``, or binary ``{-1, +1}``) and, going
back, ``dy/dx = d(u)`` and LSQ's ``dy/ds = (Q(u) - z) - v * d(u)`` (``v = x / s``, ``u = v + z``)
where ``d`` is the estimator's surrogate slope of ``Q`` (for a sign, which does not depend on
``s``, the exact ``dy/ds = Q(u)``, BiViT's channel-scale gradient):

- ``ste``: ``d = 1`` (identity); zero outside the grid's range (``u < qmin`` or ``u > qmax``).
- ``reste`` (ReSTE, Wu et al. 2023): the slope of a power function ``sign(e) |e|^(1/o)`` of the
  normalized distance ``e`` to the rounding threshold, ``d = min(m, (1/o) |e|^(1/o - 1))``, with
  ``o = power`` (1 is the STE) and ``m = clamp`` bounding the slope near the threshold. Binary:
  ``e = u``; multi-bit: ``e = 1 - 2 |u - round(u)|`` (0 at a threshold, 1 at a code).
- ``biper`` (BiPer, Vargas et al. 2024): binary forward is the square wave
  ``Q(u) = sign(sin(freq * u))``, backward the slope of its sine surrogate, ``d = freq * cos(freq * u)``
  (latent weights beyond ``|u| > pi / freq`` flip sign: the wave is periodic, as in the paper).
  Multi-bit (and ternary) layers keep the rounding forward; the sine surrogate is applied to the
  rounding residual: ``round(u) ~ u - sin(2 pi u) / (2 pi)``, so ``d = 1 - cos(2 pi u)`` (0 at a
  code, 2 at a threshold, mean 1); ``freq`` matters for 1-bit layers only.

Example:
    >>> import torch
    >>> x = torch.tensor([0.3, -1.2, 2.6], requires_grad=True)
    >>> y = fake_quant(x, torch.tensor(1.0), Grid(-2, 1), Estimator("ste"))
    >>> y.tolist(), (y.sum().backward(), x.grad.tolist())[1]
    ([0.0, -1.0, 1.0], [1.0, 1.0, 0.0])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ESTIMATORS = ("ste", "reste", "biper")


@dataclass(frozen=True)
class Grid:
    """Codes ``qmin..qmax`` (integers), or ``{-1, +1}`` when ``binary``."""

    qmin: int = -1
    qmax: int = 1
    binary: bool = False

    @property
    def levels(self) -> int:
        """LSQ's ``Q_P``: the largest code magnitude the gradient scale uses."""
        return 1 if self.binary else max(abs(self.qmin), abs(self.qmax), 1)


@dataclass(frozen=True)
class Estimator:
    """A surrogate slope: ``kind`` in :data:`ESTIMATORS` and its hyper-parameters.

    Attributes:
        kind: ``ste``, ``reste`` or ``biper``.
        power: ReSTE's ``o`` (>= 1; 1 is the STE).
        clamp: ReSTE's bound ``m`` on the slope.
        freq: BiPer's frequency (1-bit grids only).
        clip: zero the slope outside the grid (multi-bit) or outside ``|u| <= 1`` (binary).
    """

    kind: str = "ste"
    power: float = 3.0
    clamp: float = 3.0
    freq: float = 1.0
    clip: bool = True


def codes(u: torch.Tensor, grid: Grid, est: Estimator) -> torch.Tensor:
    """The forward staircase ``Q(u)``: rounded and clamped, sign, or BiPer's square wave."""
    if grid.binary:
        arg = torch.sin(est.freq * u) if est.kind == "biper" else u
        return torch.where(arg >= 0, 1.0, -1.0).to(u.dtype)
    return u.round().clamp(grid.qmin, grid.qmax)


def slope(u: torch.Tensor, grid: Grid, est: Estimator) -> torch.Tensor:
    """The estimator's ``dQ/du`` at ``u`` (see the module docstring), clipping included."""
    if est.kind == "ste":
        d = torch.ones_like(u)
    elif est.kind == "reste":
        e = u.abs() if grid.binary else 1.0 - 2.0 * (u - u.round()).abs()
        inv = 1.0 / est.power
        # e = 0 is the threshold itself: the power's slope is unbounded there, the clamp holds it
        d = (inv * e.clamp_min(1e-12).pow(inv - 1.0)).clamp(max=est.clamp)
    elif est.kind == "biper":
        d = est.freq * torch.cos(est.freq * u) if grid.binary else 1.0 - torch.cos(2 * math.pi * u)
    else:
        raise ValueError(f"unknown estimator {est.kind!r}: choose from {', '.join(ESTIMATORS)}")
    if est.clip:
        inside = (u.abs() <= 1.0) if grid.binary else (u >= grid.qmin) & (u <= grid.qmax)
        d = d * inside
    return d


class FakeQuant(torch.autograd.Function):
    """``y = s * (Q(x / s + z) - z)`` with the estimator's backward to ``x`` and LSQ's to ``s``."""

    @staticmethod
    def forward(ctx, x, s, z, grid, est, gscale):  # type: ignore[override]
        v = x / s
        u = v + z
        q = codes(u, grid, est)
        ctx.save_for_backward(v, u, q, z, s)
        ctx.grid, ctx.est, ctx.gscale = grid, est, gscale
        return (q - z) * s

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        v, u, q, z, s = ctx.saved_tensors
        d = slope(u, ctx.grid, ctx.est)
        gx = g * d if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            # sign(x / s) does not depend on s > 0: the exact dy/ds of a sign is Q(u); the LSQ
            # term -v * d belongs to grids whose codes move with s (rounding, BiPer's wave)
            moves = not ctx.grid.binary or ctx.est.kind == "biper"
            gs = (g * ((q - z) - v * d if moves else q - z) * ctx.gscale).sum_to_size(s.shape)
        return gx, gs, None, None, None, None


def fake_quant(x: torch.Tensor, s: torch.Tensor, grid: Grid, est: Estimator,
               z: torch.Tensor | None = None, gscale: float = 1.0) -> torch.Tensor:
    """:class:`FakeQuant` of ``x`` with step ``s`` (broadcast to ``x``) and zero point ``z``.

    ``gscale`` multiplies the step's gradient (LSQ: ``1 / sqrt(N * Q_P)``, ``N`` the elements
    sharing one step).
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device) if z is None else z.to(x.dtype)
    return FakeQuant.apply(x, s, zero, grid, est, float(gscale))


def lsq_gscale(elements: int, grid: Grid) -> float:
    """LSQ's gradient scale ``1 / sqrt(N * Q_P)`` for a step shared by ``elements`` values."""
    return 1.0 / math.sqrt(max(int(elements), 1) * grid.levels)
