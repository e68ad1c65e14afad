"""Kernel modules from a quantizer's weights: the codes and scales of the weight it simulated.

:func:`autocomp.kernels.modules.convert` rounds the float weights to the nearest code (rtn). A
study evaluated with another quantizer (``gptq``, ``awq``, ``adaround``, ``+bias_correction``)
simulated other weights and biases, so its kernels must run those. :func:`convert_quantized`
takes the quantizer's compressed model (:meth:`autocomp.quantizers.Quantizer.apply`, BatchNorm
re-estimation and corrected biases included) and puts on each policy layer a kernel module whose
codes reproduce that layer's simulated weight:

1. rtn's codes of the float weight, when they reproduce it (rtn and bias-only quantizers: the
   very modules ``convert`` builds);
2. else rtn's codes of the simulated weight, when they reproduce it;
3. else the grid is read off the simulated weight (:func:`recover_qparams`): per group, the
   scale is the largest |weight| (symmetric) or the range (asymmetric) over a code count, the
   largest count tried first, and the first count that puts every weight of the group on an
   integer code in range wins. Any such representation dequantizes to the same weights.

A weight the quantizer returned with an ``input_scale`` (AWQ: ``W_eff = Q(W·diag(s))·diag(1/s)``)
is stored as the codes of ``W_eff·diag(s)``, and the kernel module divides its input by ``s``
(per input channel for a convolution). Codes that do not reproduce the simulated weight
(relative error above ``1e-5``) are a ``ValueError`` naming the layer.

Example:
    >>> sim = quantizer.apply(model, policy, ranges, stats, batches=calib, results=results)  # doctest: +SKIP
    >>> kmodel = convert_quantized(model, sim, policy, ranges, results)                       # doctest: +SKIP
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch

from autocomp.kernels.modules import QuantConv2d, QuantLinear, _replace, weight_qparams
from autocomp.modules import is_embedding, is_linear, weight_of
from autocomp.policy import Choice, Policy, input_range, policy_modules
from autocomp.quant import TERNARY_BITS, is_float

#: largest relative error (to the layer's max |weight|) of the codes against the simulated weight
TOLERANCE = 1e-5


def _code_range(choice: Choice) -> tuple[int, int]:
    if choice.w_bits == 1 or abs(choice.w_bits - TERNARY_BITS) < 1e-6:
        return -1, 1
    b = int(round(choice.w_bits))
    return (0, 2**b - 1) if choice.zero_point else (-(2 ** (b - 1)), 2 ** (b - 1) - 1)


def _dequantize(codes: torch.Tensor, scale: torch.Tensor, zeros: torch.Tensor | None, group: int | None) -> torch.Tensor:
    """The weight ``[N, K]`` of codes in :func:`weight_qparams`' layout."""
    k = codes.shape[1]
    expand = (lambda t: t[:, None]) if group is None else (lambda t: t.t().repeat_interleave(group, dim=1)[:, :k])
    c = codes.float() - (expand(zeros) if zeros is not None else 0.0)
    return c * expand(scale)


def recover_qparams(w: torch.Tensor, choice: Choice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Codes ``[N, K]``, scales and zero points (:func:`weight_qparams`' layout) of a weight ``w``
    ``[N, K]`` that already lies on a grid of ``choice``'s format (each group: integer codes in
    range times one scale, minus one zero point); see the module docstring.

    Raises:
        ValueError: a group is on no such grid.

    Example:
        >>> w = torch.tensor([[0.5, -1.0, 1.5, 0.0]])       # codes 1, -2, 3, 0 at scale 0.5
        >>> codes, scale, _ = recover_qparams(w, Choice(3, 32))
        >>> codes.tolist(), scale.tolist()
        ([[1.0, -2.0, 3.0, 0.0]], [0.5])
    """
    lo, hi = _code_range(choice)
    n, k = w.shape
    g = k if choice.group is None else min(int(choice.group), k)
    groups = -(-k // g)
    # zeros pad the last group: 0 is code 0 (symmetric) or the zero point, and widens no range
    rows = torch.nn.functional.pad(w.detach().double(), (0, groups * g - k)).reshape(n * groups, g)
    asym = choice.zero_point
    top, bottom = rows.amax(dim=1), rows.amin(dim=1)
    span = (top - bottom) if asym else rows.abs().amax(dim=1)
    if asym:   # a constant group: its one value is one step from the zero point
        span = torch.where(span > 0, span, top.abs())
    scale = torch.ones_like(span)
    codes = torch.zeros_like(rows)
    zero = torch.zeros_like(span)
    todo = span > 0
    for m in range(hi - lo if asym else max(-lo, hi), 0, -1):
        if not bool(todo.any()):
            break
        idx = todo.nonzero().reshape(-1)
        s = span[idx] / m
        u = rows[idx] / s[:, None]
        r = u.round()
        on_grid = ((u - r).abs() <= 1e-3).all(dim=1)
        if asym:
            z = (-r.amin(dim=1)).clamp_min(0)
            fits = (r.amax(dim=1) + z <= hi) & (r.amin(dim=1) + z >= lo)
        else:   # a negative scale (the extreme weight on code lo) is the grid of codes -r
            z = torch.zeros_like(s)
            fits = (r.amax(dim=1) <= hi) & (r.amin(dim=1) >= lo)
            flip = ~fits & (-r.amin(dim=1) <= hi) & (-r.amax(dim=1) >= lo)
            s, r = torch.where(flip, -s, s), torch.where(flip[:, None], -r, r)
            fits = fits | flip
        ok = on_grid & fits
        done = idx[ok]
        scale[done], zero[done] = s[ok], z[ok]
        codes[done] = r[ok] + z[ok][:, None]
        todo[done] = False
    if bool(todo.any()):
        bad = int(todo.nonzero()[0])
        raise ValueError(f"row {bad // groups}, group {bad % groups}: the weights lie on no {choice.key} grid")
    if asym:   # unsigned codes 0..2^b-1, shifted to the signed range as weight_qparams does
        shift = float(2 ** (int(round(choice.w_bits)) - 1))
        codes, zero = codes - shift, zero - shift
    codes = codes.reshape(n, groups * g)[:, :k].round().float()   # float codes, as weight_qparams gives
    scale, zero = scale.reshape(n, groups).float(), zero.reshape(n, groups).float()
    if choice.group is None:
        return codes, scale[:, 0].contiguous(), zero[:, 0].contiguous() if asym else None
    return codes, scale.t().contiguous(), zero.t().contiguous() if asym else None


def layer_qparams(name: str, float_w: torch.Tensor, sim_w: torch.Tensor, choice: Choice
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Codes, scales and zero points that reproduce ``sim_w`` (both ``[N, K]``), found as the
    module docstring says; a ValueError naming ``name`` when none does."""
    ref = max(float(sim_w.abs().max()), 1e-30)
    err = float("inf")
    tries = (lambda: weight_qparams(float_w, choice), lambda: weight_qparams(sim_w, choice),
             lambda: recover_qparams(sim_w, choice))
    for attempt in tries:
        try:
            q = attempt()
        except ValueError:
            continue
        err = float((_dequantize(*q, choice.group) - sim_w).abs().max()) / ref
        if err <= TOLERANCE:
            return q
    raise ValueError(f"layer {name!r}: the quantizer's weights are not representable as {choice.key} codes "
                     f"(max relative error {err:.2g})")


def convert_quantized(model: torch.nn.Module, sim: torch.nn.Module, policy: Policy,
                      act_ranges: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
                      results: Mapping[str, Any] | None = None, backend: str = "auto") -> torch.nn.Module:
    """A copy of the quantizer's compressed model ``sim`` whose policy layers run on kernels.

    Args:
        model: the float model ``sim`` was compressed from (rtn's codes are tried on its weights).
        sim: :meth:`Quantizer.apply`'s model (weights, biases and BatchNorms as evaluated).
        policy: the policy ``sim`` follows.
        act_ranges: calibrated input ranges, as for :func:`autocomp.kernels.modules.convert`.
        results: the quantizer's :class:`~autocomp.quantizers.LayerResult` per layer name (from
            ``apply(..., results=...)``): their ``input_scale``; None when it set none.
        backend: as for ``convert``.
    """
    out = copy.deepcopy(sim)
    floats = dict(model.named_modules())
    for name, choice, mod in policy_modules(out, policy):
        if is_float(choice.w_bits) or is_embedding(mod) or not (is_linear(mod) or isinstance(mod, torch.nn.Conv2d)):
            continue   # as convert: already simulated in ``sim`` (float weights, lookup tables, Conv1d)
        res = (results or {}).get(name)
        s = getattr(res, "input_scale", None)
        sim_w = weight_of(mod).detach().float()
        sim_w = sim_w.reshape(sim_w.shape[0], -1)
        float_w = weight_of(floats[name]).detach().float().reshape(sim_w.shape)
        if s is not None:
            s = s.detach().float().reshape(-1)
            sim_w, float_w = sim_w * s[None, :], float_w * s[None, :]
        codes, scale, zeros = layer_qparams(name, float_w, sim_w, choice)
        rng = input_range(act_ranges, name, choice)
        if isinstance(mod, torch.nn.Conv2d):
            new = QuantConv2d(codes, scale, mod.bias, choice, tuple(mod.weight.shape), mod.stride, mod.padding,
                              mod.dilation, mod.groups, rng, choice.group, backend, zeros)
            s = None if s is None else s.reshape(mod.weight.shape[1], -1)[:, 0].reshape(1, -1, 1, 1)
        else:
            new = QuantLinear(codes, scale, mod.bias, choice, rng, choice.group, backend, zeros)
        if s is not None:
            new.input_scale = s.contiguous()
        _replace(out, name, new)
    return out
