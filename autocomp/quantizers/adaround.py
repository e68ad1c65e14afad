"""``adaround``: learned rounding (Nagel et al., 2020), per layer, on rtn's grid.

rtn rounds each weight to its nearest code; AdaRound chooses per weight between the code below
(``floor(w / scale)``) and the one above, for the least output error of the layer. The choice is
relaxed to ``h(V) = clamp(sigmoid(V)·(ζ − γ) + γ, 0, 1)`` (the rectified sigmoid, ζ = 1.1,
γ = −0.1), started at rtn's fractional part, and ``V`` is optimised with Adam for ``iters``
steps against the reconstruction error in closed form from the calibration input Hessian
``H = E[x xᵀ]`` (``tr(ΔW H ΔWᵀ)``, relative to rtn's, so no activations are stored) plus
``reg · mean(1 − |2h − 1|^β)``, whose β is annealed from 20 to 2 after a warm-up so the
relaxation ends binary. The result rounds ``h ≥ 0.5`` up, and is kept only if its output error
is below rtn's (else rtn's weight is returned).

Representable exactly as rtn's: the same per-group (or per-channel) scales and zero points, from
rtn's MSE clip search; each code is rtn's floor or floor + 1, clamped to the code range. Pruned
weights (rtn's magnitude mask) stay exactly zero. Integer bit-widths 2..16 only: binary, ternary
and layers without matching statistics (embeddings, grouped convolutions) fall back to rtn.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> from autocomp.quantizers import collect_stats, get_quantizer
    >>> torch.manual_seed(0) and None
    >>> m = torch.nn.Sequential(torch.nn.Linear(16, 8))
    >>> q = get_quantizer("adaround", iters=200)
    >>> st = collect_stats(m, [torch.randn(128, 16)], ["0"], q.needs)["0"]
    >>> tuple(q.quantize_layer("0", m[0], Choice(3, 32), st).weight.shape)
    (8, 16)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from autocomp.policy import Choice
from autocomp.quant import GroupQuant, compress_weight, prune_mask, quantize_weight_groups
from autocomp.quantizers._base import LayerResult, LayerStats, Quantizer
from autocomp.quantizers.awq import output_error

_ZETA, _GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundOptions:
    """Attributes:
        iters: Adam steps per layer.
        lr: Adam's learning rate on ``V``.
        reg: weight of the rounding regulariser.
        warmup: fraction of ``iters`` before the regulariser starts (β annealing from 20 to 2).
    """

    iters: int = 200
    lr: float = 1e-2
    reg: float = 0.01
    warmup: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"iters must be a positive integer, not {self.iters!r}")
        if not (self.lr > 0 and self.reg >= 0 and 0 <= self.warmup < 1):
            raise ValueError("lr must be > 0, reg >= 0 and 0 <= warmup < 1")


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """AdaRound's ``h(V)``: a sigmoid stretched to ``[γ, ζ]`` and clamped to ``[0, 1]``."""
    return (torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1)


def _code_range(gq: GroupQuant, bits: int) -> tuple[int, int]:
    return (0, 2**bits - 1) if gq.zeros is not None else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


class AdaRoundQuantizer(Quantizer):
    """Learned up/down rounding per weight on rtn's grid (see the module docstring)."""

    name = "adaround"
    Options = AdaRoundOptions
    needs = frozenset({"hessian"})

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:
        w, done = self.start_layer(name, module, choice, stats)
        if done is not None:
            return done
        rtn = compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point)
        flat = w.reshape(w.shape[0], -1).float()
        bits = choice.w_bits
        if float(bits) != int(bits) or int(bits) < 2 or stats.hessian.shape[0] != flat.shape[1]:
            return LayerResult(rtn)
        h = stats.hessian.float()
        mask = prune_mask(flat, choice.prune).float() if choice.prune > 0 else torch.ones_like(flat)
        wm = flat * mask
        gq = quantize_weight_groups(wm, bits, choice.group, choice.zero_point)
        scale = gq.expand(gq.scales)
        zero = gq.expand(gq.zeros) if gq.zeros is not None else torch.zeros_like(scale)
        lo, hi = _code_range(gq, int(bits))
        v = wm / scale + zero
        floor = v.floor()
        # weight(up) = base + step * up: codes clamped at either end of the range cannot move
        free = ((floor >= lo) & (floor + 1 <= hi)).float()
        base = (floor.clamp(lo, hi) - zero) * scale * mask
        step = scale * mask * free

        def weight(up: torch.Tensor) -> torch.Tensor:
            return base + step * up

        rtn_err = output_error(rtn.reshape(flat.shape).float() - flat, h)
        if rtn_err <= 0:
            return LayerResult(rtn)
        frac = (v - floor).clamp(0.01, 0.99)
        # h(V0) = frac: start from rtn's own fractional parts
        param = torch.nn.Parameter(-torch.log((_ZETA - _GAMMA) / (frac - _GAMMA) - 1))
        opt = torch.optim.Adam([param], lr=self.options.lr)
        start = int(self.options.warmup * self.options.iters)
        base_err = base - flat
        for it in range(self.options.iters):
            up = rectified_sigmoid(param)
            d = base_err + step * up
            loss = ((d @ h) * d).sum() / rtn_err
            if it >= start and self.options.reg > 0:
                t = (it - start) / max(1, self.options.iters - start)
                beta = 20.0 + (2.0 - 20.0) * t
                loss = loss + self.options.reg * (1 - (2 * up - 1).abs().pow(beta)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            learned = weight((rectified_sigmoid(param) >= 0.5).float())
        if output_error(learned - flat, h) >= rtn_err:
            return LayerResult(rtn)
        return LayerResult(learned.reshape(w.shape).to(w.dtype))
