"""Kernel-backed ``QuantLinear`` / ``QuantConv2d`` and ``convert`` for a whole policy.

A module stores its weight as packed integer codes (1/2/4/8-bit words, see
:mod:`autocomp.kernels.packing`) with per-channel (or, on the GPU kernels, per-group) scales,
plus the per-tensor activation parameters of its input. Its forward picks a backend:

=============  ===========================================================================
backend        used for
=============  ===========================================================================
triton_wq      CUDA, weights <= 4 bits (int4, ternary, binary) or activations above 8 bits:
               fp16 activations (fake-quantized first) x packed weights
triton_w8a8    CUDA, weights 5..8 bits with activations <= 8 bits: int8 x int8 tensor cores
cpu_int8       CPU (x86), weights <= 8 bits with activations <= 8 bits: FBGEMM / oneDNN int8
reference      everything else (16-bit weights, weight-only on CPU, grouped convs):
               dequantized float weights, i.e. the simulation itself; it buys no speed
=============  ===========================================================================

Numerics are the simulation's (:mod:`autocomp.quant`): the codes come from
``quantize_weight_groups`` after magnitude pruning (per channel or per group, as the choice
says), activations from ``act_qparams``. Group-wise choices run on ``triton_wq`` (scales per group
along K; a shorter last group is masked like any K tail). Asymmetric choices (zero points) and
embeddings have no kernel here: the first run on ``reference``, the second stay simulated, and
:func:`kernel_note` says why for the validation report.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> from autocomp.kernels.modules import QuantLinear
    >>> q = QuantLinear.from_float(torch.nn.Linear(16, 4), Choice(4, 8), act_range=(-3.0, 3.0))
    >>> q(torch.randn(2, 16)).shape
    torch.Size([2, 4])
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn.functional as F

from autocomp.kernels.packing import container_bits, pack, unpack
from autocomp.modules import is_embedding, is_linear, weight_of
from autocomp.policy import Choice, Policy, compress_layer, input_range, policy_modules
from autocomp.quant import act_qparams, fake_quant_act, is_float, prune_mask, quantize_weight_groups

BACKENDS = ("auto", "triton_wq", "triton_w8a8", "cpu_int8", "reference")


def weight_qparams(w: torch.Tensor, choice: Choice, group_size: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Signed codes [N, K], scales and zero points of a 2-D weight as the simulation builds them
    (prune, then quantize per channel or per ``group_size`` / ``choice.group`` inputs).

    Scales come back as [N] per channel, [ceil(K / group), N] per group. Asymmetric codes and
    zero points are shifted by ``-2**(bits-1)`` so they pack like symmetric ones; the weight is
    ``(codes - zeros) * scale`` either way.
    """
    w = w.detach().float()
    group = group_size if group_size is not None else choice.group
    mask = prune_mask(w, choice.prune) if choice.prune > 0 else None
    if mask is not None:
        w = w * mask
    gq = quantize_weight_groups(w, choice.w_bits, group, choice.zero_point)
    codes, zeros = gq.codes, gq.zeros
    if zeros is not None:
        shift = float(2 ** (int(round(choice.w_bits)) - 1))
        codes, zeros = codes - shift, zeros - shift
    elif mask is not None:
        codes = codes * mask  # symmetric: a pruned weight is code 0
    if group is None:
        return codes, gq.scales[:, 0].contiguous(), None if zeros is None else zeros[:, 0].contiguous()
    return codes, gq.scales.t().contiguous(), None if zeros is None else zeros.t().contiguous()


def weight_codes(w: torch.Tensor, choice: Choice, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [N, K] and scales of a symmetric choice (see :func:`weight_qparams`).

    Per-group scales come back as [ceil(K / group_size), N]; per-channel as [N].
    """
    if choice.zero_point:
        raise ValueError(f"choice {choice.key} has zero points: use weight_qparams")
    codes, scale, _ = weight_qparams(w, choice, group_size)
    return codes, scale


def kernel_note(module: torch.nn.Module, choice: Choice) -> str:
    """Why ``choice`` on ``module`` runs on no low-bit kernel ('' when one takes it)."""
    if is_float(choice.w_bits):
        return "float weights: no low-bit kernel"
    if is_embedding(module):
        return "embedding: a table lookup, weights dequantized (no kernel)"
    if choice.w_bits > 8:
        return "above 8 bits: no low-bit container, reference path"
    if choice.zero_point:
        return "asymmetric (zero point): no kernel takes zero points, reference path"
    if not (is_linear(module) or isinstance(module, torch.nn.Conv2d)):
        return f"{type(module).__name__}: no kernel, simulated"
    if isinstance(module, torch.nn.Conv2d) and module.groups != 1:
        return "grouped convolution: reference path"
    if choice.per_token:
        return "per-token dynamic inputs: no int8 kernel here takes them, reference path"
    return ""


class _QuantBase(torch.nn.Module):
    """Packed codes + scales + activation parameters; subclasses define the op."""

    def _setup(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, choice: Choice,
               act_range: tuple[float, float] | None, group_size: int | None, backend: str,
               zeros: torch.Tensor | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: one of {BACKENDS}")
        if zeros is not None and backend not in ("auto", "reference"):
            raise ValueError(f"backend {backend!r} takes no zero points (choice {choice.key}): use reference")
        self.choice, self.group_size, self.requested = choice, group_size, backend
        self.register_buffer("zeros", zeros.float() if zeros is not None else None)
        # AWQ's per-input-channel scale s (see autocomp.kernels.from_quantizer): inputs / s
        self.register_buffer("input_scale", None)
        self.k = codes.shape[1]
        self.bits = container_bits(codes) if not is_float(choice.w_bits) and choice.w_bits <= 8 else 0
        if self.bits:
            self.register_buffer("packed", pack(codes.t(), self.bits, dim=0))  # [K/per, N]
        else:  # 9..16-bit codes: no low-bit container, kept as int16
            self.register_buffer("codes16", codes.to(torch.int16))
        self.register_buffer("scale", scale.float())
        self.register_buffer("bias", bias.detach().float().clone() if bias is not None else None)
        self.act = None
        if not is_float(choice.a_bits):
            if act_range is None:
                raise ValueError("a quantized activation needs its calibrated (lo, hi) range")
            lo, hi = float(act_range[0]), float(act_range[1])
            # per token: no static scale; only the fake-quantizing paths (reference, triton_wq) run it
            s, zp, qmin, qmax = (1.0, 0, 0, 2**int(choice.a_bits) - 1) if choice.per_token else act_qparams(lo, hi, int(choice.a_bits))
            self.act = (lo, hi, int(choice.a_bits), s, int(zp), int(qmax))
        self._cache: dict[tuple, object] = {}

    # ---- weights in other forms, built once per device ------------------------------------
    def codes(self) -> torch.Tensor:
        """Signed codes [N, K] (int8, or int16 above 8 bits)."""
        if self.bits:
            return unpack(self.packed, self.bits, self.k, dim=0).t()
        return self.codes16

    def dequantized(self) -> torch.Tensor:
        """The float weight [N, K] the codes stand for (what the simulation multiplies by)."""
        key = ("deq", self.scale.device)
        if key not in self._cache:
            c = self.codes().float()
            if self.group_size is None:
                if self.zeros is not None:
                    c = c - self.zeros[:, None]
                w = c * self.scale[:, None]
            else:
                expand = lambda t: t.t().repeat_interleave(self.group_size, dim=1)[:, : self.k]  # noqa: E731
                if self.zeros is not None:
                    c = c - expand(self.zeros)
                w = c * expand(self.scale)
            self._cache[key] = w
        return self._cache[key]

    def backend_for(self, device: torch.device | str) -> str:
        """The backend a forward on ``device`` uses (see the module docstring)."""
        if self.requested != "auto":
            return self.requested
        dev = torch.device(device).type
        low_act = self.act is not None and self.act[2] <= 8 and not self.choice.per_token
        if not self.bits or not self._kernel_ok() or self.zeros is not None:
            return "reference"
        if dev == "cuda":
            if self.bits <= 4 or not low_act:
                return "triton_wq"
            return "triton_w8a8" if self.group_size is None else "triton_wq"
        if dev == "cpu":
            from autocomp.kernels.cpu import cpu_int8_available

            if low_act and self.group_size is None and cpu_int8_available():
                return "cpu_int8"
        return "reference"

    def _kernel_ok(self) -> bool:
        return True

    def _scale_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_scale is None else x / self.input_scale.to(x.device)

    def _act_fq(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is None:
            return x
        lo, hi, bits = self.act[:3]
        return fake_quant_act(x, lo, hi, bits)

    def _gemm(self, x2: torch.Tensor, backend: str) -> torch.Tensor:
        """[M, K] float -> [M, N] float32 through a GPU kernel (activations not yet quantized)."""
        from autocomp.kernels import triton_kernels as tk

        dev = x2.device
        if backend == "triton_w8a8":
            key = ("w8a8", dev)
            if key not in self._cache:
                c = self.codes().to(torch.int32)
                self._cache[key] = (c.t().to(torch.int8).contiguous().to(dev), c.sum(dim=1).to(torch.int32).to(dev))
            wt, colsum = self._cache[key]
            _, _, _, s, zp, qmax = self.act
            # Unsigned codes shifted by -128 fit int8; the zero point shifts with them.
            xq = (torch.clamp(torch.round(x2.float() / s) + zp, 0, qmax) - 128).to(torch.int8)
            return tk.w8a8_matmul(xq, s, zp - 128, wt, colsum, self.scale, self.bias)
        xa = self._act_fq(x2.float()).to(torch.float16).contiguous()
        return tk.wq_matmul(xa, self.packed, self.scale, self.bits, self.k, bias=self.bias, group=self.group_size)


class QuantLinear(_QuantBase):
    """A ``Linear`` running on low-bit kernels; see the module docstring for backends."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, choice: Choice,
                 act_range: tuple[float, float] | None = None, group_size: int | None = None, backend: str = "auto",
                 zeros: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]
        self._setup(codes, scale, bias, choice, act_range, group_size, backend, zeros)

    @classmethod
    def from_float(cls, mod: torch.nn.Module, choice: Choice, act_range: tuple[float, float] | None = None,
                   group_size: int | None = None, backend: str = "auto") -> "QuantLinear":
        """Quantize a ``torch.nn.Linear`` (or transformers' ``Conv1D``) following ``choice``."""
        group = group_size if group_size is not None else choice.group
        codes, scale, zeros = weight_qparams(weight_of(mod), choice, group)
        return cls(codes, scale, mod.bias, choice, act_range, group, backend, zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._scale_input(x)
        backend = self.backend_for(x.device)
        if backend == "reference":
            return F.linear(self._act_fq(x.float()), self.dequantized(), self.bias)
        if backend == "cpu_int8":
            key = ("cpu_int8",)
            if key not in self._cache:
                from autocomp.kernels.cpu import Int8Linear

                _, _, _, s, zp, qmax = self.act
                self._cache[key] = Int8Linear(self.codes(), self.scale, self.bias, s, zp, qmax)
            return self._cache[key](x)
        shape = x.shape
        y = self._gemm(x.reshape(-1, shape[-1]), backend)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, choice={self.choice.key}, packed_bits={self.bits}"


class QuantConv2d(_QuantBase):
    """A ``Conv2d`` on low-bit kernels (GPU: im2col + the GEMM kernels; CPU: oneDNN int8)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, choice: Choice,
                 weight_shape: tuple[int, ...], stride, padding, dilation, groups: int = 1,
                 act_range: tuple[float, float] | None = None, group_size: int | None = None, backend: str = "auto",
                 zeros: torch.Tensor | None = None):
        super().__init__()
        self.weight_shape = tuple(weight_shape)
        self.stride, self.padding, self.dilation, self.groups = tuple(stride), tuple(padding), tuple(dilation), groups
        self._setup(codes, scale, bias, choice, act_range, group_size, backend, zeros)

    @classmethod
    def from_float(cls, mod: torch.nn.Conv2d, choice: Choice, act_range: tuple[float, float] | None = None,
                   group_size: int | None = None, backend: str = "auto") -> "QuantConv2d":
        """Quantize a ``torch.nn.Conv2d`` (zero padding mode) following ``choice``."""
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise ValueError("QuantConv2d supports explicit zero padding only")
        group = group_size if group_size is not None else choice.group
        codes, scale, zeros = weight_qparams(mod.weight.reshape(mod.out_channels, -1), choice, group)
        return cls(codes, scale, mod.bias, choice, tuple(mod.weight.shape), mod.stride, mod.padding,
                   mod.dilation, mod.groups, act_range, group, backend, zeros)

    def _kernel_ok(self) -> bool:
        return self.groups == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._scale_input(x)
        backend = self.backend_for(x.device)
        if backend == "reference":
            w = self.dequantized().reshape(self.weight_shape)
            return F.conv2d(self._act_fq(x.float()), w, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if backend == "cpu_int8":
            key = ("cpu_int8",)
            if key not in self._cache:
                from autocomp.kernels.cpu import Int8Conv2d

                _, _, _, s, zp, qmax = self.act
                codes = self.codes().reshape(self.weight_shape)
                self._cache[key] = Int8Conv2d(codes, self.scale, self.bias, s, zp, qmax, self.stride,
                                              self.padding, self.dilation, self.groups)
            return self._cache[key](x)
        b, _, h, w_ = x.shape
        kh, kw = self.weight_shape[2:]
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w_ + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        # im2col pads with real zeros before quantization, as the simulated conv does.
        cols = F.unfold(x, (kh, kw), self.dilation, self.padding, self.stride)  # [B, K, L]
        y = self._gemm(cols.transpose(1, 2).reshape(-1, cols.shape[1]), backend)  # [B*L, N]
        return y.reshape(b, oh * ow, -1).transpose(1, 2).reshape(b, -1, oh, ow)

    def extra_repr(self) -> str:
        return f"{self.weight_shape}, choice={self.choice.key}, packed_bits={self.bits}"


def convert(model: torch.nn.Module, policy: Policy,
            act_ranges: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
            backend: str = "auto", group_size: int | None = None) -> torch.nn.Module:
    """A copy of ``model`` whose policy layers are kernel-backed modules (float choices stay float).

    Args:
        model: the float model (not modified).
        policy: per-layer choices, as for :func:`autocomp.policy.apply`.
        act_ranges: calibrated input ranges per layer per activation bit-width.
        backend: ``auto`` or one backend forced for every layer.
        group_size: per-group weight scales for every layer, overriding the choices' own
            ``group`` (benchmarks; the simulation follows the choices).

    Example:
        >>> qmodel = convert(model, policy, ranges)          # doctest: +SKIP
    """
    out = copy.deepcopy(model)
    for name, choice, mod in policy_modules(out, policy):
        if is_float(choice.w_bits) and is_float(choice.a_bits) and choice.prune == 0:
            continue
        rng = None if is_embedding(mod) else input_range(act_ranges, name, choice)
        if is_float(choice.w_bits) or is_embedding(mod):
            compress_layer(mod, choice, rng)  # float weights or a lookup table: no low-bit kernel to run
            continue
        if isinstance(mod, torch.nn.Conv2d):
            new = QuantConv2d.from_float(mod, choice, rng, group_size, backend)
        elif is_linear(mod):
            new = QuantLinear.from_float(mod, choice, rng, group_size, backend)
        else:
            compress_layer(mod, choice, rng)  # Conv1d: no kernel here
            continue
        _replace(out, name, new)
    return out


def _replace(root: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
