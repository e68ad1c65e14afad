"""The CPU int8 path: integer weight codes x uint8 activation codes on PyTorch's int8 kernels.

Linear layers run on FBGEMM (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``: the
input is quantized per tensor inside the kernel and the output comes back in fp32), convolutions
on oneDNN (``onednn::qconv2d_pointwise`` with an fp32 output). Both compute
``s_x * s_w[n] * sum_k (q_x - zp) * q_w`` exactly in int32, which is the simulation's math.

x86 CPUs without VNNI multiply u8 x s8 pairs into *saturating* int16 sums, so
``2 * (2**a_bits - 1) * max|q_w|`` must stay below 2**15. Where it would not (8-bit weights
with 8-bit activations) the weight codes are split as ``q_w = 2 * hi + lo`` (linear) or the
activation codes as ``q_x = 2 * hi + lo`` (conv), and two exact int8 products are summed: still
exact, but at twice the work; the validation report shows what that costs.

``torch._int_mm`` also runs on the CPU but through a reference loop (~100x slower than fp32
here), so it is not used.

Example:
    >>> lin = Int8Linear(codes, scale, bias, x_scale=0.02, x_zp=0, x_qmax=255)   # doctest: +SKIP
    >>> y = lin(x)                                                             # doctest: +SKIP

``split`` forces (True) or forbids (False) the two-product form; None decides from the CPU.
"""
from __future__ import annotations

import functools
import platform
import warnings

import torch

_SAT = 2**15 - 1


@functools.lru_cache(maxsize=1)
def has_vnni() -> bool:
    """True when the CPU has VNNI/AMX (no int16 saturation in u8 x s8 dot products)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@functools.lru_cache(maxsize=1)
def cpu_int8_available() -> bool:
    """FBGEMM and oneDNN int8 kernels exist in this PyTorch build on an x86-64 CPU."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return (hasattr(torch.ops.quantized, "linear_with_input_q_dq_qweight_dq_output_fp32")
                and hasattr(torch.ops.onednn, "qconv2d_pointwise") and torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        return False


def saturates(x_qmax: int, w_absmax: int) -> bool:
    """Whether a pair of u8 x s8 products can overflow int16 on this CPU."""
    return not has_vnni() and 2 * x_qmax * w_absmax > _SAT


def _qweight(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantized-tensor API is deprecated but is FBGEMM's input
        return torch._make_per_channel_quantized_tensor(
            codes.to(torch.int8).contiguous(), scale.double(), torch.zeros(codes.shape[0], dtype=torch.long), 0)


class Int8Linear:
    """FBGEMM int8 linear with fp32 in/out; activation quantization matches ``fake_quant_act``."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 x_scale: float, x_zp: int, x_qmax: int, split: bool | None = None):
        self.x_scale, self.x_zp, self.x_qmax = float(x_scale), int(x_zp), int(x_qmax)
        codes = codes.to(torch.int16)
        b = bias.detach().float() if bias is not None else None
        self.split = saturates(x_qmax, int(codes.abs().max())) if split is None else split
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.split:
                hi = torch.div(codes, 2, rounding_mode="floor")
                lo = codes - 2 * hi
                self.packed = [torch.ops.quantized.linear_prepack(_qweight(hi, 2 * scale), b),
                               torch.ops.quantized.linear_prepack(_qweight(lo, scale), None)]
            else:
                self.packed = [torch.ops.quantized.linear_prepack(_qweight(codes, scale), b)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        # Hand FBGEMM values already on the code grid: its reciprocal-multiply quantization then
        # lands exactly on our codes (no ties), and codes below 8 bits stop at x_qmax, not 255.
        s, zp = self.x_scale, self.x_zp
        x2 = (torch.clamp(torch.round(x2 / s) + zp, 0, self.x_qmax) - zp) * s
        op = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
        y = op(x2, self.x_scale, self.x_zp, self.packed[0])
        if self.split:
            y = y + op(x2, self.x_scale, self.x_zp, self.packed[1])
        return y.reshape(*shape[:-1], y.shape[-1])


class Int8Conv2d:
    """oneDNN int8 conv2d with fp32 output; zero-point padding keeps padded values at real 0."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 x_scale: float, x_zp: int, x_qmax: int, stride, padding, dilation, groups: int,
                 split: bool | None = None):
        self.x_scale, self.x_zp, self.x_qmax = float(x_scale), int(x_zp), int(x_qmax)
        self.stride, self.padding, self.dilation, self.groups = list(stride), list(padding), list(dilation), int(groups)
        self.w_scale = scale.float().contiguous()
        self.w_zp = torch.zeros(codes.shape[0], dtype=torch.long)
        self.bias = bias.detach().float() if bias is not None else None
        c8 = codes.to(torch.int8).contiguous()
        self.split = saturates(x_qmax, int(codes.abs().max())) if split is None else split
        # Activation split q = 2 * hi + lo: hi has zero point zp // 2 at scale 2 s_x, lo zp % 2 at s_x.
        self.parts = ([(2 * self.x_scale, self.x_zp // 2), (self.x_scale, self.x_zp % 2)] if self.split
                      else [(self.x_scale, self.x_zp)])
        self.packed = [torch.ops.onednn.qconv_prepack(c8, self.w_scale, s, z, self.stride, self.padding,
                                                      self.dilation, self.groups, None) for s, z in self.parts]

    def _conv(self, q: torch.Tensor, i: int, bias: torch.Tensor | None) -> torch.Tensor:
        s, z = self.parts[i]
        return torch.ops.onednn.qconv2d_pointwise(q, s, z, self.packed[i], self.w_scale, self.w_zp, bias,
                                                  self.stride, self.padding, self.dilation, self.groups,
                                                  1.0, 0, torch.float32, "none", [], "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x.float() / self.x_scale) + self.x_zp, 0, self.x_qmax).to(torch.uint8)
        if not self.split:
            return self._conv(q, 0, self.bias)
        return self._conv(q >> 1, 0, self.bias) + self._conv(q & 1, 1, None)
