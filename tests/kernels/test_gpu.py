"""Compiled kernels on a CUDA GPU at real sizes (skipped without CUDA)."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("m", [1, 16, 128])
def test_wq_gemm_4096(bits, m):
    from autocomp.kernels import triton_kernels as tk
    from autocomp.kernels.packing import code_range, pack

    g = torch.Generator().manual_seed(bits * 100 + m)
    n = k = 4096
    lo, hi = code_range(bits)
    codes = (torch.randint(0, 2, (n, k), generator=g) * 2 - 1) if bits == 1 else torch.randint(lo, hi + 1, (n, k), generator=g)
    scale = torch.rand(n, generator=g) / 64 + 1e-3
    x = torch.randn(m, k, generator=g).half().cuda()
    packed = pack(codes.t(), bits, dim=0).cuda()
    y = tk.wq_matmul(x, packed, scale.cuda(), bits, k)
    ref = x.float() @ (codes.float() * scale[:, None]).cuda().t()
    assert float((y - ref).abs().max() / ref.abs().max()) < 1e-2
    if m == 1:
        yg = tk.wq_matmul(x, packed, scale.cuda(), bits, k, block_n=128, block_k=128, gemv=True)
        assert float((yg - ref).abs().max() / ref.abs().max()) < 1e-2


def test_w8a8_gemm_4096():
    from autocomp.kernels import triton_kernels as tk

    g = torch.Generator().manual_seed(0)
    xq = torch.randint(-128, 128, (64, 4096), generator=g, dtype=torch.int8)
    wt = torch.randint(-127, 128, (4096, 4096), generator=g, dtype=torch.int8)
    ws = torch.rand(4096, generator=g) / 100
    y = tk.w8a8_matmul(xq.cuda(), 0.02, -3, wt.cuda(), wt.int().sum(0).int().cuda(), ws.cuda())
    ref = (0.02 * (xq.double() + 3) @ wt.double()) * ws.double()
    assert float((y.double().cpu() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_validate_digits_policy_on_cuda(digits):
    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.kernels.validate import ACT_BITS, validate_policy
    from autocomp.policy import Choice, Policy
    from autocomp.modules import quantizable_layers

    m = digits.model()
    names = [n for n, _ in quantizable_layers(m)]
    ranges = activation_ranges(activation_stats(m, names, digits.calib), ACT_BITS)
    choices = [Choice(8, 8), Choice(4, 8), Choice(1.58, 8), Choice(1, 8), Choice(6, 8), Choice(2, 8), Choice(4, 8, 0.5),
               Choice(8, 8), Choice(4, 32)]
    pol = Policy.from_choices(dict(zip(names, choices)))
    rep = validate_policy(m, pol, ranges, digits.sample_input(), "cuda", repeats=5, metric=digits.metric,
                          eval_batches=digits.eval)
    assert rep.ok, [l for l in rep.layers if not l.ok]
    assert {"triton_wq", "triton_w8a8"} <= set(rep.backends())
    assert rep.device.startswith("cuda") and rep.latency > 0 and rep.kernel_accuracy is not None
