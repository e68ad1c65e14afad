"""The Triton kernels' logic on the CPU (``TRITON_INTERPRET=1``) against the simulation.

Without CUDA the interpreter is switched on before triton is first imported, so the kernels
run as NumPy programs; shapes stay tiny because the interpreter is slow. With CUDA the same
tests run compiled on the GPU.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

pytest.importorskip("triton")

from autocomp.kernels import triton_kernels as tk  # noqa: E402
from autocomp.kernels.modules import QuantConv2d, QuantLinear, weight_codes  # noqa: E402
from autocomp.kernels.packing import pack  # noqa: E402
from autocomp.kernels.validate import BOUNDS  # noqa: E402
from autocomp.policy import Choice, apply, Policy  # noqa: E402
from autocomp.quant import act_qparams  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def layer(digits):
    """A real trained layer (classifier.3: 128 -> 64) and real inputs to it."""
    m = digits.model()
    x = digits.calib[0][0][:3]
    feats = m.classifier[2](m.classifier[1](m.classifier[0](m.features(x))))
    return m.classifier[3], feats.detach()


@pytest.mark.parametrize("bits", [1, 1.58, 4, 8])
@pytest.mark.parametrize("split_k", [1, 2])
def test_weight_only_gemm_matches_simulation(layer, bits, split_k):
    lin, x = layer
    codes, scale = weight_codes(lin.weight, Choice(bits, 32))
    cbits = {1: 1, 1.58: 2, 4: 4, 8: 8}[bits]
    packed = pack(codes.t(), cbits, dim=0).to(DEV)
    y = tk.wq_matmul(x.half().to(DEV), packed, scale.to(DEV), cbits, codes.shape[1], bias=lin.bias.to(DEV),
                     split_k=split_k, block_n=32, block_k=32)
    sim = apply(torch.nn.Sequential(lin), Policy.from_choices({"0": Choice(bits, 32)}))
    assert _rel(y, sim(x)) < BOUNDS["triton_wq"]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_gemv_kernel_matches_the_dot_kernel(layer, bits):
    lin, x = layer
    codes, scale = weight_codes(lin.weight, Choice({1: 1, 2: 1.58, 4: 4}[bits], 32))
    packed = pack(codes.t(), bits, dim=0).to(DEV)
    args = (x.half().to(DEV), packed, scale.to(DEV), bits, 128)
    y_dot = tk.wq_matmul(*args, bias=lin.bias.to(DEV), block_n=32, block_k=32)
    y_gemv = tk.wq_matmul(*args, bias=lin.bias.to(DEV), block_n=32, block_k=32, gemv=True, split_k=2)
    assert _rel(y_gemv, y_dot) < 1e-3
    gcodes, gscales = weight_codes(lin.weight, Choice(4, 32), group_size=32)
    gp = pack(gcodes.t(), 4, dim=0).to(DEV)
    ref = x @ (gcodes * gscales.t().repeat_interleave(32, dim=1)).t()
    y = tk.wq_matmul(x.half().to(DEV), gp, gscales.to(DEV), 4, 128, group=32, block_n=32, block_k=64, gemv=True)
    assert _rel(y, ref) < BOUNDS["triton_wq"]


@pytest.mark.parametrize("bits", [2, 4])
def test_per_group_scales(layer, bits):
    lin, x = layer
    codes, scales = weight_codes(lin.weight, Choice(bits, 32), group_size=32)
    assert scales.shape == (4, 64)
    packed = pack(codes.t(), bits, dim=0).to(DEV)
    y = tk.wq_matmul(x.half().to(DEV), packed, scales.to(DEV), bits, 128, group=32, block_n=32, block_k=32)
    ref = x @ (codes * scales.t().repeat_interleave(32, dim=1)).t()
    assert _rel(y, ref) < BOUNDS["triton_wq"]
    # per-group scales fit a 2-bit weight better than one scale per channel
    pc_codes, pc_scale = weight_codes(lin.weight, Choice(bits, 32))
    w = lin.weight.detach()
    err_group = float(((codes * scales.t().repeat_interleave(32, dim=1)) - w).pow(2).sum())
    err_chan = float(((pc_codes * pc_scale[:, None]) - w).pow(2).sum())
    assert err_group < err_chan


def test_w8a8_gemm_is_exact_integer_math(layer):
    lin, x = layer
    codes, scale = weight_codes(lin.weight, Choice(8, 8))
    s, zp, _, qmax = act_qparams(float(x.min()), float(x.max()), 8)
    xq = torch.clamp(torch.round(x / s) + zp, 0, qmax)
    wt = codes.t().to(torch.int8).contiguous()
    y = tk.w8a8_matmul((xq - 128).to(torch.int8).to(DEV), s, int(zp) - 128, wt.to(DEV),
                       codes.sum(1).to(torch.int32).to(DEV), scale.to(DEV), lin.bias.to(DEV), block_n=32, block_k=32)
    ref = torch.nn.functional.linear((xq - zp) * s, codes * scale[:, None], lin.bias)
    assert _rel(y, ref) < BOUNDS["triton_w8a8"]


@pytest.mark.parametrize("choice,backend", [(Choice(4, 8), "triton_wq"), (Choice(1.58, 8, 0.5), "triton_wq"),
                                            (Choice(8, 8), "triton_w8a8")])
def test_modules_on_triton_backends(digits, choice, backend):
    m = digits.model()
    conv, x = m.features[0], digits.calib[0][0][:2]
    lo, hi = float(x.min()), float(x.max())
    qc = QuantConv2d.from_float(conv, choice, (lo, hi), backend=backend).to(DEV)
    sim = apply(torch.nn.Sequential(conv), Policy.from_choices({"0": choice}), {"0": {int(choice.a_bits): (lo, hi)}})
    with torch.no_grad():
        assert _rel(qc(x.to(DEV)), sim(x)) < BOUNDS[backend]
    lin = m.classifier[5]
    xl = torch.randn(4, 64).relu()
    ql = QuantLinear.from_float(lin, choice, (0.0, float(xl.max())), backend=backend).to(DEV)
    siml = apply(torch.nn.Sequential(lin), Policy.from_choices({"0": choice}), {"0": {int(choice.a_bits): (0.0, float(xl.max()))}})
    with torch.no_grad():
        assert _rel(ql(xl.to(DEV)), siml(xl)) < BOUNDS[backend]


@pytest.mark.parametrize("choice", [Choice(4, 32, group=48), Choice(2, 32, 0.5, group=32), Choice(4, 8, group=64)])
def test_group_wise_choices_on_triton_match_the_simulation(layer, choice):
    """The choice's own group (48 does not divide K=128: a shorter last group) through QuantLinear."""
    lin, x = layer
    acts = {"0": {8: (0.0, float(x.max()))}}
    ql = QuantLinear.from_float(lin, choice, acts["0"][8] if choice.a_bits == 8 else None, backend="triton_wq").to(DEV)
    assert ql.group_size == choice.group and ql.scale.shape == (-(-128 // choice.group), 64)
    sim = apply(torch.nn.Sequential(lin), Policy.from_choices({"0": choice}), acts)
    with torch.no_grad():
        assert _rel(ql(x.to(DEV)), sim(x)) < BOUNDS["triton_wq"]


def test_zero_point_choices_refuse_the_triton_backend(layer):
    lin, x = layer
    with pytest.raises(ValueError, match="takes no zero points"):
        QuantLinear.from_float(lin, Choice(4, 32, group=32, zero_point=True), backend="triton_wq")
    q = QuantLinear.from_float(lin, Choice(4, 32, group=32, zero_point=True))
    assert q.backend_for(DEV) == "reference"
    sim = apply(torch.nn.Sequential(lin), Policy.from_choices({"0": Choice(4, 32, group=32, zero_point=True)}))
    with torch.no_grad():
        assert _rel(q(x), sim(x)) < BOUNDS["reference"]
