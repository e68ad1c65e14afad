"""``awq``: activation-aware weight quantization (Lin et al., 2023), for weight-only layers.

Input channels that see large activations matter most. Per layer, a per-input-channel scale
``s = absmean ** α`` (normalised so ``max(s) * min(s) = 1``, rounded to fp16) multiplies the
weight's columns before rounding; the layer then computes ``Q(W·diag(s)) · (x / s)``, the same
output as the float layer but with the salient channels rounded on a finer relative grid. ``α``
is searched over ``grid`` values in ``[0, 1)`` for the least output error on the calibration
inputs, in closed form from the input Hessian ``H = E[x xᵀ]``: ``err(ΔW) = tr(ΔW H ΔWᵀ)``,
each candidate rounded on its groups' full ranges (one rounding, no clip search). For the chosen
``α`` alone, the weight is then rounded with rtn's MSE clip search and, with ``clip``, with each
group's (or channel's) clipping ratio chosen for the least output error (H's diagonal block of
that group); the clip searches, 15 and 21 roundings, run once per layer, not once per ``α``.
rtn's own result (``α = 0``, MSE clip) competes with them on that error, so on the calibration
data awq is never worse than rtn.

What is stored, and what :meth:`AWQQuantizer.quantize_layer` returns:

- ``LayerResult.input_scale`` is ``s`` (``[K]``, fp16-exact values): the stored weight is
  ``weight · diag(s)`` = integer codes × group scales (− zero points), the choice's usual format,
  up to float32 rounding of the division. For a convolution ``s`` is one value per input channel,
  repeated over its ``kh·kw`` patch columns, so it is a per-input-channel vector too.
- ``LayerResult.weight`` is the effective weight ``Q(W·diag(s)) · diag(1/s)``, which is what the
  simulation runs. A deployment divides the input by ``s``: folded into the previous op where the
  graph allows (a LayerNorm's weight and bias, a preceding linear's output rows), else kept as the
  layer's fp16 input-scale vector, K·16 bits against the N·K·bits of the codes. The cost model
  does not count it (negligible: under 1 % of the codes for N ≥ 400 at 4 bits).
- ``input_scale`` is None when rtn's result (``α = 0``) won or awq does not apply.

AWQ is for weight-only layers: a layer whose input is quantized (``a_bits < 32``) would need the
``1/s`` before the activation quantizer, which the per-tensor range does not model, so it falls
back to rtn; so do embeddings (no input activations), binary/ternary clipping, and layers whose
statistics do not match the weight (grouped convolutions). Pruned weights (rtn's magnitude mask
of ``W``) stay exactly zero.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> from autocomp.quantizers import collect_stats, get_quantizer
    >>> torch.manual_seed(0) and None
    >>> m = torch.nn.Sequential(torch.nn.Linear(32, 8))
    >>> x = torch.randn(256, 32) * torch.linspace(0.1, 4, 32)
    >>> st = collect_stats(m, [x], ["0"], get_quantizer("awq").needs)["0"]
    >>> res = get_quantizer("awq").quantize_layer("0", m[0], Choice(3, 32), st)
    >>> tuple(res.input_scale.shape)
    (32,)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from autocomp.policy import Choice
from autocomp.quant import TERNARY_BITS, compress_weight, is_float, prune_mask
from autocomp.quantizers._base import LayerResult, LayerStats, Quantizer

# AWQ's clip grid: the range shrunk by up to half, in 20 steps.
_CLIPS = tuple(1.0 - 0.025 * i for i in range(21))


@dataclass(frozen=True)
class AWQOptions:
    """Attributes:
        grid: ``α`` values searched: ``0, 1/grid, ..., (grid-1)/grid``.
        clip: choose each group's clipping ratio for the least output error (else rtn's MSE clip).
    """

    grid: int = 20
    clip: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 1:
            raise ValueError(f"grid must be a positive integer, not {self.grid!r}")


def output_error(dw: torch.Tensor, h: torch.Tensor) -> float:
    """``tr(ΔW H ΔWᵀ)``: the summed squared output error of a weight error ``dw`` ``[N, K]`` over
    inputs with second moment ``h`` ``[K, K]`` (mean over input rows)."""
    return float(((dw @ h) * dw).sum())


def channel_salience(module: torch.nn.Module, absmean: torch.Tensor, k: int) -> torch.Tensor:
    """Mean |x| per weight column; a convolution's tied over each input channel's patch."""
    w = module.weight
    if w.dim() > 2:  # conv: columns are (in_channel, kh, kw)-major, one channel per w.shape[1]
        per = absmean.reshape(w.shape[1], -1)
        return per.mean(dim=1).repeat_interleave(per.shape[1])
    return absmean[:k]


def awq_scale(salience: torch.Tensor, alpha: float) -> torch.Tensor:
    """``salience ** alpha``, normalised to ``max * min = 1`` and rounded to fp16 values."""
    a = salience.clamp_min(float(salience.max()) * 1e-5 + 1e-12)
    s = a.pow(alpha)
    s = s / (s.max() * s.min()).sqrt()
    return s.clamp(1e-4, 1e4).half().float()


def _grouped(t: torch.Tensor, group: int | None) -> tuple[torch.Tensor, int]:
    """``t`` ``[N, K]`` as ``[N, G, g]``, the last group padded with zeros, and ``g``. A zero
    neither widens a range (which always holds 0) nor rounds to anything but 0."""
    n, k = t.shape
    g = k if group is None else min(int(group), k)
    groups = -(-k // g)
    return torch.nn.functional.pad(t, (0, groups * g - k)).reshape(n, groups, g), g


def _clipped(rows: torch.Tensor, bits: int, zero_point: bool, ratio: float) -> torch.Tensor:
    """Round-to-nearest of each row on the grid of its range shrunk by ``ratio`` (quant's formulas)."""
    if zero_point:
        qmax = 2**bits - 1
        lo, hi = rows.amin(dim=1).clamp_max(0.0), rows.amax(dim=1).clamp_min(0.0)
        scale = ((hi - lo) * ratio / qmax).clamp_min(1e-12)[:, None]
        zp = (-lo[:, None] * ratio / scale).round().clamp(0, qmax)
        return ((rows / scale + zp).round().clamp(0, qmax) - zp) * scale
    qmax = 2 ** (bits - 1) - 1
    scale = (rows.abs().amax(dim=1).clamp_min(1e-12) * ratio / qmax)[:, None]
    return (rows / scale).round().clamp(-qmax - 1, qmax) * scale


def full_range(ws: torch.Tensor, choice: Choice) -> torch.Tensor:
    """``ws`` ``[N, K]`` rounded per row and group on the grid of its full range (no clipping)."""
    n, k = ws.shape
    rows, g = _grouped(ws, choice.group)
    q = _clipped(rows.reshape(-1, g), int(round(choice.w_bits)), choice.zero_point, 1.0)
    return q.reshape(n, -1)[:, :k]


def clip_search(ws: torch.Tensor, h: torch.Tensor, choice: Choice) -> torch.Tensor:
    """``ws`` ``[N, K]`` rounded with, per row and group, the clip ratio of least output error
    under ``h``'s diagonal block of that group."""
    bits = int(round(choice.w_bits))
    n, k = ws.shape
    rows, g = _grouped(ws, choice.group)
    groups = rows.shape[1]
    hp = torch.nn.functional.pad(h, (0, groups * g - k, 0, groups * g - k))
    # the diagonal blocks [G, g, g]: group j's inputs with themselves
    blocks = hp.reshape(groups, g, groups, g).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    flat = rows.reshape(-1, g)
    best_err = best = None
    for r in _CLIPS:
        q = _clipped(flat, bits, choice.zero_point, r).reshape(rows.shape)
        d = q - rows
        err = torch.einsum("ngi,gij,ngj->ng", d, blocks, d)
        if best is None:
            best_err, best = err, q
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better[..., None], q, best)
    return best.reshape(n, -1)[:, :k]


class AWQQuantizer(Quantizer):
    """Activation-aware per-input-channel scaling, searched per layer (see the module docstring)."""

    name = "awq"
    Options = AWQOptions
    needs = frozenset({"absmean", "hessian"})

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:
        w, done = self.start_layer(name, module, choice, stats)
        if done is not None:
            return done
        rtn = compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point)
        flat = w.reshape(w.shape[0], -1).float()
        k = flat.shape[1]
        if not is_float(choice.a_bits) or stats.hessian.shape[0] != k or stats.absmean.numel() != k:
            return LayerResult(rtn)
        h = stats.hessian.float()
        mask = prune_mask(flat, choice.prune).float() if choice.prune > 0 else torch.ones_like(flat)
        wm = flat * mask
        salience = channel_salience(module, stats.absmean.float(), k)

        clippable = choice.w_bits != 1 and abs(choice.w_bits - TERNARY_BITS) > 1e-6

        def rounded(s: torch.Tensor) -> torch.Tensor:
            return compress_weight(wm * s, choice.w_bits, 0.0, choice.group, choice.zero_point) * mask / s

        def plain(s: torch.Tensor) -> torch.Tensor:
            # the full range, no clip search: 1 rounding per α instead of rtn's 15
            if not clippable:
                return rounded(s)
            return full_range(wm * s, choice) * mask / s

        # α by the output error of plain rounding; the clip searches (rtn's MSE one, and the
        # output-error one with ``clip``) then run once, for that α.
        best_alpha, alpha_err = 0.0, output_error(plain(torch.ones(k)) - flat, h)
        for i in range(1, self.options.grid):
            e = output_error(plain(awq_scale(salience, i / self.options.grid)) - flat, h)
            if e < alpha_err:
                best_alpha, alpha_err = i / self.options.grid, e
        best_err, best_w, best_s = output_error(rtn.reshape(flat.shape).float() - flat, h), None, None
        s = awq_scale(salience, best_alpha) if best_alpha > 0 else torch.ones(k)
        candidates = [rounded(s)] if best_alpha > 0 else []
        if self.options.clip and clippable:
            candidates.append(clip_search(wm * s, h / (s[:, None] * s[None, :]), choice) * mask / s)
        for q in candidates:
            e = output_error(q - flat, h)
            if e < best_err:
                best_err, best_w, best_s = e, q, s
        if best_w is None:
            return LayerResult(rtn)
        return LayerResult(best_w.reshape(w.shape).to(w.dtype), input_scale=best_s)
