"""Fake-quantization numerics shared by the simulation, the proxies and the kernels.

Weights: symmetric, per output channel, clipping ratio chosen per channel to minimise the MSE.
1 bit: sign with a per-channel scale (mean |w|). 1.58 bits: ternary, BitNet b1.58 style
(absmean scale, round and clamp to {-1, 0, 1}). Activations: per tensor, affine, range from
calibration with an MSE-chosen clip at low bit-widths; or per token, dynamic
(:func:`fake_quant_act_token`): each position's feature vector (a row of the last dimension)
quantized with the affine range of its own min and max, found at run time. An unbounded range
(:data:`TOKEN_RANGE`) stands for the per-token one wherever a range is passed around.

Group-wise weights (:func:`quantize_weight_groups`): each output row (for a convolution, its
flattened ``in * kh * kw``) is cut into groups of ``group`` consecutive input elements, each with
its own scale (and, asymmetric, its own zero point) and its own MSE clip search. A row not
divisible by ``group`` ends in one shorter group; a group at least as long as the row is one
group per row. ``group=None`` is per output channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOAT_BITS = 32
TERNARY_BITS = 1.58
# Clipping ratios tried per channel for the MSE search; 1.0 first so ties keep the full range.
_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3)


def is_float(bits: float) -> bool:
    """True when ``bits`` means "leave in floating point"."""
    return bits >= FLOAT_BITS


def _per_channel(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def binarize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign with a per-output-channel scale (mean |w|). Returns (codes in {-1, 1}, scale)."""
    flat = _per_channel(w)
    scale = flat.abs().mean(dim=1).clamp_min(1e-12)
    codes = torch.where(flat >= 0, 1.0, -1.0).to(w.dtype)
    return codes.reshape(w.shape), scale


def ternarize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58 ternary: scale = mean |w| per channel, codes = clamp(round(w/scale), -1, 1)."""
    flat = _per_channel(w)
    scale = flat.abs().mean(dim=1).clamp_min(1e-12)
    codes = (flat / scale[:, None]).round().clamp(-1, 1)
    return codes.reshape(w.shape), scale


def _symmetric_scales(flat: torch.Tensor, amax: torch.Tensor, qmax: int, b: int, clip: bool = True):
    """The per-row scales the symmetric search tries.

    ``clip`` (rtn's grid, unchanged since the first release): positive scales ``amax·r / qmax``
    over the clip ratios, the full range first. ``clip=False`` (the ``absmax`` quantizer,
    ``gptq(clip=false)``): the signed absmax scale alone (:func:`signed_absmax_scale`), nothing
    clipped.
    """
    if not clip:
        yield signed_absmax_scale(flat, b)
        return
    for r in _CLIP_RATIOS if b <= 8 else (1.0,):
        yield amax * r / qmax


def signed_absmax_scale(rows: torch.Tensor, bits: int) -> torch.Tensor:
    """Per row, the scale that puts the row's largest-magnitude weight on the code ``-2^(bits-1)``
    (negative when that weight is positive): no clipping, every step ``max|w| / 2^(bits-1)``.

    Example:
        >>> signed_absmax_scale(torch.tensor([[0.5, -2.0], [4.0, 1.0]]), 4).tolist()
        [0.25, -0.5]
    """
    ext = rows.gather(1, rows.abs().argmax(dim=1, keepdim=True))[:, 0]
    amax = ext.abs().clamp_min(1e-12)
    return torch.where(ext < 0, amax, -amax) / 2 ** (bits - 1)


def quantize_weight_codes(w: torch.Tensor, bits: float, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and per-channel scales so that ``codes * scale[:, None, ...] ~= w``.

    Args:
        w: weight with output channels on dim 0.
        bits: 1 (binary), 1.58 (ternary) or an integer 2..16.
        clip: search the scale by MSE over clipped ranges (default); False: the signed absmax
            scale (the largest-magnitude weight on the code ``-2^(b-1)``), nothing clipped.

    Returns:
        (codes as float tensor shaped like w, scale of shape [out_channels]).
    """
    if bits == 1:
        return binarize_weight(w)
    if abs(bits - TERNARY_BITS) < 1e-6:
        return ternarize_weight(w)
    b = int(round(bits))
    if b < 2 or b > 16 or abs(b - bits) > 1e-6:
        raise ValueError(f"unsupported weight bit-width {bits}")
    qmax = 2 ** (b - 1) - 1
    flat = _per_channel(w)
    amax = flat.abs().amax(dim=1).clamp_min(1e-12)
    best_err = None
    best_scale = amax / qmax
    for scale in _symmetric_scales(flat, amax, qmax, b, clip):
        q = (flat / scale[:, None]).round().clamp(-qmax - 1, qmax)
        err = ((q * scale[:, None] - flat) ** 2).sum(dim=1)
        if best_err is None:
            best_err, best_scale = err, scale
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, scale, best_scale)
    codes = (flat / best_scale[:, None]).round().clamp(-qmax - 1, qmax)
    return codes.reshape(w.shape), best_scale


def fake_quant_weight(w: torch.Tensor, bits: float, group: int | None = None,
                      zero_point: bool = False, clip: bool = True) -> torch.Tensor:
    """Quantize-dequantize ``w`` at ``bits`` (float bit-widths return ``w`` unchanged).

    ``group`` / ``zero_point`` select group-wise and asymmetric quantization
    (:func:`quantize_weight_groups`); the defaults are symmetric per output channel.
    """
    if is_float(bits):
        return w
    if group is not None or zero_point:
        with torch.no_grad():
            return quantize_weight_groups(w.detach().float(), bits, group, zero_point, clip).dequantize().to(w.dtype)
    with torch.no_grad():
        codes, scale = quantize_weight_codes(w.detach().float(), bits, clip)
        shape = (-1,) + (1,) * (w.dim() - 1)
        return (codes * scale.reshape(shape)).to(w.dtype)


def _asym_rows(rows: torch.Tensor, bits: int, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric RTN per row: unsigned codes 0..2**bits-1, scale and integer zero point per row.

    The range always holds 0 (as GPTQ's) so zeros, pruned weights included, stay exact; the clip
    search shrinks both ends by the same ratio (``clip=False``: the full range only).
    """
    qmax = 2**bits - 1
    lo = rows.amin(dim=1).clamp_max(0.0)
    hi = rows.amax(dim=1).clamp_min(0.0)
    best_err = best_scale = best_zp = None
    for r in _CLIP_RATIOS if bits <= 8 and clip else (1.0,):
        scale = ((hi - lo) * r / qmax).clamp_min(1e-12)
        zp = (-lo * r / scale).round().clamp(0, qmax)
        q = (rows / scale[:, None] + zp[:, None]).round().clamp(0, qmax)
        err = (((q - zp[:, None]) * scale[:, None] - rows) ** 2).sum(dim=1)
        if best_err is None:
            best_err, best_scale, best_zp = err, scale, zp
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, scale, best_scale)
            best_zp = torch.where(better, zp, best_zp)
    codes = (rows / best_scale[:, None] + best_zp[:, None]).round().clamp(0, qmax)
    return codes, best_scale, best_zp


def _rows_rtn(rows: torch.Tensor, bits: float, zero_point: bool,
             clip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not zero_point:
        codes, scale = quantize_weight_codes(rows, bits, clip)
        return codes, scale, None
    b = int(round(bits))
    if b < 2 or b > 16 or abs(b - bits) > 1e-6:
        raise ValueError(f"asymmetric (zero point) quantization takes 2..16 bits, not {bits}")
    return _asym_rows(rows, b, clip)


def group_count(k: int, group: int | None) -> int:
    """Groups per output row of ``k`` input elements (the last one may be shorter)."""
    return 1 if group is None else max(1, -(-k // int(group)))


@dataclass(frozen=True)
class GroupQuant:
    """A weight as integer codes with per-group scales (and zero points): the stored format.

    Attributes:
        codes: ``[N, K]`` integer-valued floats; signed when symmetric, ``0..2**bits-1`` when
            asymmetric.
        scales: ``[N, G]`` with ``G = group_count(K, group)``.
        zeros: ``[N, G]`` integer zero points (asymmetric), else None.
        group: input elements per group (None: one group per row, per channel).
        shape: the original weight shape (output channels first).
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group: int | None
    shape: tuple[int, ...]

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """A per-group ``[N, G]`` tensor repeated to ``[N, K]``."""
        k = self.codes.shape[1]
        g = k if self.group is None else int(self.group)
        return t.repeat_interleave(g, dim=1)[:, :k]

    def dequantize(self) -> torch.Tensor:
        """The float weight the codes stand for, in the original shape."""
        q = self.codes if self.zeros is None else self.codes - self.expand(self.zeros)
        return (q * self.expand(self.scales)).reshape(self.shape)


def quantize_weight_groups(w: torch.Tensor, bits: float, group: int | None = None,
                           zero_point: bool = False, clip: bool = True) -> GroupQuant:
    """Round-to-nearest per group of ``group`` consecutive input elements of each output row.

    Args:
        w: weight with output channels on dim 0 (a convolution's ``in*kh*kw`` is flattened).
        bits: 1 (binary), 1.58 (ternary) or 2..16; asymmetric takes 2..16.
        group: group length; None for per output channel. A row not divisible by it ends in one
            shorter group; a group longer than the row covers the whole row.
        zero_point: asymmetric (scale and zero point per group) instead of symmetric.
        clip: the MSE clip search (default); False: full ranges (signed absmax when symmetric).

    Returns:
        A :class:`GroupQuant` (codes, ``[N, G]`` scales, zero points).

    Example:
        >>> import torch
        >>> gq = quantize_weight_groups(torch.randn(4, 10), 4, group=4)
        >>> tuple(gq.scales.shape), float((gq.codes.abs() <= 8).float().mean())
        ((4, 3), 1.0)
    """
    if group is not None and (isinstance(group, bool) or int(group) < 1):
        raise ValueError(f"group size must be a positive integer, not {group!r}")
    flat = _per_channel(w.detach().float())
    n, k = flat.shape
    g = k if group is None else min(int(group), k)
    full = k // g
    out = [_rows_rtn(p, bits, zero_point, clip) for p in split_groups(flat, group)]
    codes = torch.cat([out[0][0].reshape(n, full * g)] + [o[0] for o in out[1:]], dim=1)
    scales = torch.cat([out[0][1].reshape(n, full)] + [o[1][:, None] for o in out[1:]], dim=1)
    zeros = None
    if zero_point:
        zeros = torch.cat([out[0][2].reshape(n, full)] + [o[2][:, None] for o in out[1:]], dim=1)
    return GroupQuant(codes, scales, zeros, None if group is None else int(group), tuple(w.shape))


def split_groups(flat: torch.Tensor, group: int | None) -> list[torch.Tensor]:
    """``[N, K]`` cut into rows of one group each: ``[N * (K // g), g]`` full groups, then the
    ``[N, K % g]`` shorter last groups when ``g`` does not divide ``K`` (``g = K`` per channel)."""
    n, k = flat.shape
    g = k if group is None else min(int(group), k)
    full = k // g
    parts = [flat[:, : full * g].reshape(n * full, g)]
    if full * g < k:
        parts.append(flat[:, full * g:])
    return parts


def prune_mask(w: torch.Tensor, ratio: float) -> torch.Tensor:
    """Magnitude mask keeping the largest ``1 - ratio`` fraction of ``w`` (unstructured)."""
    n = w.numel()
    k = int(round(ratio * n))
    if k <= 0:
        return torch.ones_like(w, dtype=torch.bool)
    if k >= n:
        return torch.zeros_like(w, dtype=torch.bool)
    thresh = w.detach().abs().flatten().kthvalue(k).values
    mask = w.detach().abs() > thresh
    # Ties at the threshold: keep exactly n - k entries so the ratio is exact.
    deficit = (n - k) - int(mask.sum())
    if deficit > 0:
        ties = ((w.detach().abs() == thresh) & ~mask).flatten().nonzero().flatten()[:deficit]
        mask = mask.flatten()
        mask[ties] = True
        mask = mask.reshape(w.shape)
    return mask


def compress_weight(w: torch.Tensor, bits: float, prune: float = 0.0, group: int | None = None,
                    zero_point: bool = False, clip: bool = True) -> torch.Tensor:
    """Prune by magnitude, then fake-quantize the survivors (pruned weights stay exactly 0);
    ``clip`` as :func:`quantize_weight_groups`."""
    if prune > 0:
        mask = prune_mask(w, prune)
        w = w * mask
        if is_float(bits):
            return w
        return fake_quant_weight(w, bits, group, zero_point, clip) * mask
    return fake_quant_weight(w, bits, group, zero_point, clip)


def act_qparams(lo: float, hi: float, bits: int) -> tuple[float, float, int, int]:
    """Affine parameters (scale, zero_point, qmin, qmax) for a tensor known to lie in [lo, hi]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = 0, 2**bits - 1
    scale = max(hi - lo, 1e-8) / (qmax - qmin)
    zero_point = round(-lo / scale)
    return scale, float(zero_point), qmin, qmax


#: The "range" of a per-token dynamic input: no static bound, each token brings its own. Passed
#: wherever a calibrated (lo, hi) is, so every consumer of ranges quantizes such inputs per token.
TOKEN_RANGE = (-math.inf, math.inf)


def is_token_range(lo: float, hi: float) -> bool:
    """Whether ``(lo, hi)`` is :data:`TOKEN_RANGE` (dynamic per token) rather than a calibrated range."""
    return math.isinf(lo) and math.isinf(hi)


def fake_quant_act_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-token dynamic affine fake quantization: every row of the last dimension gets the
    range ``[min(row.min(), 0), max(row.max(), 0)]`` (as :func:`act_qparams` makes of a
    per-tensor range), computed from ``x`` itself.

    Example:
        >>> x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 10.0, 20.0, 30.0]])
        >>> fake_quant_act_token(x, 2).tolist()      # each row keeps its own grid of 4 levels
        [[0.0, 1.0, 2.0, 3.0], [0.0, 10.0, 20.0, 30.0]]
    """
    lo = x.amin(dim=-1, keepdim=True).clamp_max(0.0)
    hi = x.amax(dim=-1, keepdim=True).clamp_min(0.0)
    qmax = 2**bits - 1
    scale = (hi - lo).clamp_min(1e-8) / qmax
    zp = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zp, 0, qmax) - zp) * scale


def fake_quant_act(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """Per-tensor affine fake quantization of an activation (per token for :data:`TOKEN_RANGE`)."""
    if is_token_range(lo, hi):
        return fake_quant_act_token(x, bits)
    scale, zp, qmin, qmax = act_qparams(lo, hi, bits)
    return (torch.clamp(torch.round(x / scale) + zp, qmin, qmax) - zp) * scale


def choose_act_range(sample: torch.Tensor, lo: float, hi: float, bits: int) -> tuple[float, float]:
    """Clip [lo, hi] to the range minimising the quantization MSE on ``sample``."""
    if bits >= 8 or sample.numel() == 0 or is_token_range(lo, hi):
        return lo, hi
    best = (math.inf, lo, hi)
    for r in _CLIP_RATIOS:
        clo, chi = lo * r, hi * r
        err = float(((fake_quant_act(sample, clo, chi, bits) - sample) ** 2).mean())
        if err < best[0]:
            best = (err, clo, chi)
    return best[1], best[2]
