"""``gptq``: optimal-brain-quantization column sweep with the layer's input Hessian (GPTQ).

The weight ``W`` (``[N, K]``, output channels first, a convolution flattened to ``in*kh*kw``
columns) is quantized one input column at a time; each column's rounding error is spread over
the columns not yet quantized so that ``‖WX − Q(W)X‖`` stays small for the calibration inputs
``X``, whose second moment ``H = mean x xᵀ`` is the ``hessian`` statistic (:func:`collect_stats`).

How it is done (Frantar et al., 2022, with our own choices where the paper leaves one open):

* **Damping**: ``H += damp · mean(diag H) · I``. An input that never fired (``H_jj == 0``) gets
  ``H_jj = 1`` and its weights are set to zero, as GPTQ does: the calibration cannot see them.
* **Inverse**: the sweep needs the upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = UᵀU``). With
  ``J`` the reversal permutation and ``L`` the Cholesky factor of ``JHJ``, ``U = J L⁻¹ J``: one
  factorisation and one triangular inverse instead of GPTQ's three factorisations. float32, and
  float64 when float32 fails to factorise.
* **Lazy blocks**: the rank-1 updates are applied inside a block of ``block`` columns; the block's
  errors update the later columns in one matrix product.
* **Grid**: each group (``choice.group`` consecutive input columns in the *original* order, or the
  whole row per channel) gets its scale and zero point from :func:`autocomp.quant._rows_rtn`,
  the RTN search with its MSE clip (``clip=false``: the full range, the symmetric grid's
  largest weight on the code ``-2^(b-1)``; better in 8 of 9 symmetric cases on tiny-lm, digits
  and digits-vit at 2-4 bits, BENCHMARKS.md "Signed symmetric grids"), at the moment the sweep
  first reaches one of the group's columns, from the group's weights as updated by then (the
  columns of a group the sweep has not yet reached; pruned weights count as zero). Every column is then rounded on its group's
  grid, so the result is exactly a :class:`~autocomp.quant.GroupQuant`: integer codes in range,
  one scale (and zero point) per group.
* **act_order**: the sweep visits columns by decreasing ``H_jj`` (stable, so deterministic);
  groups stay consecutive in the original order (the grid scheme above, "static groups" whose
  parameters are fixed at first touch), so the stored format does not change.
* **Pruning** (SparseGPT-style, ``choice.prune > 0``): the mask is chosen once, before the sweep,
  by the OBS saliency ``w² / U_jj²`` (the loss of removing ``w`` when the sweep reaches it with
  the later columns left to compensate), keeping exactly ``round((1 − prune)·N·K)`` weights
  (ties as :func:`autocomp.quant.prune_mask`). Pruned weights are exactly zero and their removal
  error is compensated like a rounding error. Float bits with ``prune > 0`` prune only.
* **Grouped convolutions** (``groups > 1``, depthwise ones included): each group of output
  channels is swept on its own, with the diagonal block of the input Hessian that its input
  channels give (:func:`group_hessians`).
* **Fallbacks to rtn**: binary and ternary bits (1, 1.58: their grids are per-channel mean-|w|
  scales that a column sweep cannot keep fixed), and embeddings (no input Hessian); on rtn's grid, or
  the full range under ``clip=false``.

A linear or convolution layer without a ``hessian`` statistic is a ``ValueError``.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> from autocomp.quantizers import collect_stats, get_quantizer
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Linear(32, 8))
    >>> x = torch.randn(256, 32) @ torch.randn(32, 32)
    >>> stats = collect_stats(model, [x], ["0"], ["hessian"])
    >>> gptq, rtn = get_quantizer("gptq"), get_quantizer("rtn")
    >>> err = lambda q: float(((q.quantize_layer("0", model[0], Choice(3, 32), stats["0"]).weight
    ...                         - model[0].weight) @ x.t()).norm())
    >>> err(gptq) < err(rtn)
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from autocomp.policy import Choice
from autocomp.quant import TERNARY_BITS, _rows_rtn, is_float, prune_mask
from autocomp.quantizers._base import LayerResult, LayerStats, Quantizer


@dataclass(frozen=True)
class GPTQOptions:
    """Options of :class:`GPTQQuantizer`.

    Attributes:
        damp: added to the Hessian's diagonal, as a share of its mean diagonal (GPTQ's percdamp).
        block: columns per lazy-update block.
        act_order: sweep columns by decreasing ``H_jj`` instead of left to right.
        sequential: each layer's Hessian from the inputs it sees in the model whose earlier layers
            are already quantized, layer by layer in execution order (as the GPTQ paper), instead
            of the float model's, shared by every policy. Costs a calibration pass (up to the
            layer) per compressed layer for every policy (:mod:`autocomp.quantizers.sequential`).
        clip: each group's scale from rtn's MSE clip search (default); false: the full range,
            nothing clipped (symmetric: the signed absmax scale, the largest weight on the code
            ``-2^(b-1)``, NNCF's INT4_SYM grid; asymmetric: min..max).
    """

    damp: float = 0.01
    block: int = 128
    act_order: bool = False
    sequential: bool = False
    clip: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.damp, bool) or not isinstance(self.damp, (int, float)) \
                or not math.isfinite(self.damp) or self.damp < 0:
            raise ValueError(f"damp must be a finite number >= 0, not {self.damp!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"block must be a positive integer, not {self.block!r}")
        if not isinstance(self.act_order, bool):
            raise ValueError(f"act_order must be true or false, not {self.act_order!r}")
        if not isinstance(self.sequential, bool):
            raise ValueError(f"sequential must be true or false, not {self.sequential!r}")
        if not isinstance(self.clip, bool):
            raise ValueError(f"clip must be true or false, not {self.clip!r}")


class GPTQQuantizer(Quantizer):
    """GPTQ column sweep with the layer's input Hessian; joint with pruning (see the module)."""

    name = "gptq"
    Options = GPTQOptions
    needs = frozenset({"hessian"})

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:
        w, done = self.start_layer(name, module, choice, stats, fallback=_binary_or_ternary(choice.w_bits),
                                   prunes_float=True, clip=self.options.clip)
        if done is not None:
            return done
        o = self.options
        groups = int(getattr(module, "groups", 1) or 1)
        if groups > 1:   # a grouped (depthwise) convolution: each group of rows sees its own inputs
            return LayerResult(torch.cat([self._sweep(wg, h, choice, stats, ("group", g)) for g, (wg, h)
                                          in enumerate(zip(w.float().chunk(groups), group_hessians(stats.hessian, groups)))]))
        return LayerResult(self._sweep(w.float(), stats.hessian, choice, stats, ()))

    def _sweep(self, w: torch.Tensor, hessian: torch.Tensor, choice: Choice, stats: LayerStats,
               part: tuple) -> torch.Tensor:
        o = self.options
        key = ("gptq", o.damp, o.act_order, *part)
        factor = stats.derived.get(key)
        if factor is None:
            factor = stats.derived[key] = hessian_factor(hessian, damp=o.damp, act_order=o.act_order)
        return gptq_weight(w, hessian, choice, damp=o.damp, block=o.block, act_order=o.act_order, factor=factor,
                           clip=o.clip)


def group_hessians(hessian: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """The diagonal blocks of a grouped convolution's input Hessian, one per group.

    The statistic is collected over every input channel's patches (``in*kh*kw`` columns, channel
    major); group ``g`` of a convolution with ``groups`` groups reads channels
    ``g*in/groups .. (g+1)*in/groups - 1`` only, so its rows see the ``g``-th diagonal block.

    Example:
        >>> [b.tolist() for b in group_hessians(torch.arange(16.0).reshape(4, 4), 2)]
        [[[0.0, 1.0], [4.0, 5.0]], [[10.0, 11.0], [14.0, 15.0]]]
    """
    k = hessian.shape[0]
    if k % groups:
        raise ValueError(f"a hessian of {k} columns does not split into {groups} groups")
    s = k // groups
    return [hessian[g * s:(g + 1) * s, g * s:(g + 1) * s] for g in range(groups)]


def _binary_or_ternary(bits: float) -> bool:
    return bits == 1 or abs(bits - TERNARY_BITS) < 1e-6


@dataclass(frozen=True)
class HessianFactor:
    """What the sweep needs from a layer's Hessian, whatever the choice: the columns that never
    fired (``dead``), the sweep order (``perm``) and the upper factor ``U`` of the damped,
    permuted ``H⁻¹``. It depends on the statistics and on ``damp`` / ``act_order`` only, so a
    worker computes it once per layer and every policy reuses it (``LayerStats.derived``): the
    factorisation is most of GPTQ's cost on wide inputs (a ``[3072, 3072]`` Hessian takes seconds).
    """

    dead: torch.Tensor
    perm: torch.Tensor
    U: torch.Tensor


def hessian_factor(hessian: torch.Tensor, damp: float = 0.01, act_order: bool = False) -> HessianFactor:
    """Dead columns, sweep order and inverse Cholesky factor of ``hessian`` (see :class:`HessianFactor`).

    Example:
        >>> f = hessian_factor(torch.diag(torch.tensor([1.0, 0.0, 4.0])), act_order=True)
        >>> f.dead.tolist(), f.perm.tolist()
        ([False, True, False], [2, 0, 1])
    """
    H = hessian.detach().float().clone()
    k = H.shape[0]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    perm = torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else torch.arange(k)
    H = H[perm][:, perm]
    H.diagonal().add_(damp * float(torch.diagonal(H).mean()))
    return HessianFactor(dead, perm, _inverse_cholesky_upper(H))


def gptq_weight(w: torch.Tensor, hessian: torch.Tensor, choice: Choice, damp: float = 0.01,
                block: int = 128, act_order: bool = False, factor: HessianFactor | None = None,
                clip: bool = True) -> torch.Tensor:
    """The GPTQ-compressed ``w`` for ``choice`` (integer bits 2..16 or float bits with pruning).

    Args:
        w: weight, output channels first (any trailing shape; flattened to ``[N, K]``).
        hessian: ``[K, K]`` second moment of the layer's input rows.
        choice: bits, group, zero point and pruning ratio.
        damp, block, act_order, clip: as :class:`GPTQOptions`.
        factor: :func:`hessian_factor` of ``hessian`` with the same ``damp`` and ``act_order``,
            when the caller keeps it across policies; computed here otherwise.

    Returns:
        float32 weight shaped like ``w``.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 8)
        >>> q = gptq_weight(torch.randn(4, 8), x.t() @ x / 100, Choice(4, 32, group=4))
        >>> tuple(q.shape)
        (4, 8)
    """
    shape = w.shape
    W = w.detach().reshape(shape[0], -1).float().clone()
    n, k = W.shape
    if tuple(hessian.shape) != (k, k):
        raise ValueError(f"hessian of shape {tuple(hessian.shape)} does not fit a weight with {k} input columns")
    f = factor if factor is not None else hessian_factor(hessian, damp=damp, act_order=act_order)
    perm, U = f.perm, f.U
    W[:, f.dead] = 0.0
    W = W[:, perm]
    keep = None
    if choice.prune > 0:
        # prune_mask keeps the largest |score|: |w| / U_jj orders as the saliency w² / U_jj²
        keep = prune_mask(W / torch.diagonal(U)[None, :], choice.prune)
    quant = _FloatGrid() if is_float(choice.w_bits) else _Grids(choice, perm, n, clip)
    Q = _sweep(W, U, keep, quant, block)
    out = torch.empty_like(Q)
    out[:, perm] = Q
    return out.reshape(shape)


def _inverse_cholesky_upper(H: torch.Tensor) -> torch.Tensor:
    """Upper-triangular ``U`` with ``UᵀU = H⁻¹`` (float32; float64 when float32 cannot factorise)."""
    for dtype in (torch.float32, torch.float64):
        flipped = H.to(dtype).flip(0, 1)
        L, info = torch.linalg.cholesky_ex(flipped)
        if int(info) == 0:
            eye = torch.eye(H.shape[0], dtype=dtype)
            Linv = torch.linalg.solve_triangular(L, eye, upper=False)
            U = Linv.flip(0, 1)
            if torch.isfinite(U).all():
                return U.float()
    raise ValueError("the damped Hessian is not positive definite: raise the gptq 'damp' option")


class _FloatGrid:
    """Float bits (prune-only): a column stays as it is."""

    def column(self, col: int, w: torch.Tensor, current) -> torch.Tensor:
        return w


class _Grids:
    """The per-group grids of one sweep: each set when the sweep first reaches its group."""

    def __init__(self, choice: Choice, perm: torch.Tensor, n: int, clip: bool = True):
        k = perm.numel()
        self.bits, self.zero_point, self.clip = choice.w_bits, choice.zero_point, clip
        b = int(round(choice.w_bits))
        if b < 2 or b > 16 or abs(b - choice.w_bits) > 1e-6:
            raise ValueError(f"gptq takes 1, 1.58, 2..16 or float weight bits, not {choice.w_bits}")
        # codes: signed -2^(b-1)..2^(b-1)-1, or unsigned 0..2^b-1 with a zero point (quant.py's grids)
        self.lo, self.hi = (0.0, 2.0**b - 1) if choice.zero_point else (-(2.0 ** (b - 1)), 2.0 ** (b - 1) - 1)
        g = k if choice.group is None else min(int(choice.group), k)
        self.group_of = (perm // g).tolist()                  # sweep position -> group (original order)
        groups = -(-k // g)
        # sweep positions of each group's columns, in the original column order
        pos = torch.empty_like(perm)
        pos[perm] = torch.arange(k)
        self.members = [pos[j * g:min((j + 1) * g, k)] for j in range(groups)]
        self.scale: list[torch.Tensor | None] = [None] * groups
        self.zero: list[torch.Tensor | None] = [None] * groups

    def column(self, col: int, w: torch.Tensor, current) -> torch.Tensor:
        j = self.group_of[col]
        if self.scale[j] is None:
            _, scale, zero = _rows_rtn(current(self.members[j]), self.bits, self.zero_point, self.clip)
            self.scale[j], self.zero[j] = scale, zero
        s, z = self.scale[j], self.zero[j]
        if z is None:
            return torch.round(w / s).clamp_(self.lo, self.hi).mul_(s)
        return torch.round(w / s + z).clamp_(self.lo, self.hi).sub_(z).mul_(s)


def _sweep(W: torch.Tensor, U: torch.Tensor, keep: torch.Tensor | None, quant, block: int) -> torch.Tensor:
    """The column sweep over ``W`` (in sweep order); returns the new columns."""
    n, k = W.shape
    # Columns as contiguous rows: each step reads one and updates the rows below it in place.
    Wt = W.t().contiguous()
    keep_t = None if keep is None else keep.t().contiguous()
    Qt = torch.zeros_like(Wt)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        W1 = Wt[i1:i2]                      # a view: the block is updated in place
        Err = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i

            def current(positions: torch.Tensor, i: int = i, W1: torch.Tensor = W1,
                        Err: torch.Tensor = Err) -> torch.Tensor:
                # A group's weights as updated so far, [n, len(positions)]: those in this block
                # are current; the later ones still miss this block's lazy update, applied here
                # to them alone.
                vals = Wt[positions]
                later = positions >= i2
                if bool(later.any()):
                    p = positions[later]
                    vals[later] -= U[i1:i1 + i, p].t() @ Err[:i]
                if keep_t is not None:
                    vals = vals * keep_t[positions]
                return vals.t()

            w = W1[i]
            q = quant.column(col, w, current)
            if keep_t is not None:
                q = q * keep_t[col]
            err = (w - q) / U1[i, i]
            W1[i:].addr_(U1[i, i:], err, alpha=-1.0)
            Err[i] = err
            Qt[col] = q
        if i2 < k:
            Wt[i2:].addmm_(U[i1:i2, i2:].t(), Err, alpha=-1.0)
    return Qt.t()
