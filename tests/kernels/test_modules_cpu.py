"""Kernel-backed modules on the CPU int8 path against the fake-quant simulation."""
from __future__ import annotations

import pytest
import torch

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.kernels import convert
from autocomp.kernels.cpu import Int8Conv2d, Int8Linear, cpu_int8_available
from autocomp.kernels.modules import QuantConv2d, QuantLinear, weight_codes
from autocomp.kernels.validate import ACT_BITS, BOUNDS, layer_errors
from autocomp.policy import Choice, Policy, apply
from autocomp.modules import quantizable_layers
from autocomp.quant import act_qparams, compress_weight, fake_quant_act

needs_int8 = pytest.mark.skipif(not cpu_int8_available(), reason="no FBGEMM/oneDNN int8 kernels on this CPU")


@pytest.fixture(scope="module")
def ranges(digits):
    m = digits.model()
    names = [n for n, _ in quantizable_layers(m)]
    return names, activation_ranges(activation_stats(m, names, digits.calib), ACT_BITS)


def test_weight_codes_are_the_simulations(digits):
    w = digits.model().classifier[1].weight
    for ch in (Choice(4, 8), Choice(1, 8, 0.3), Choice(1.58, 8), Choice(3, 8, 0.5)):
        codes, scale = weight_codes(w, ch)
        assert torch.equal(codes * scale[:, None], compress_weight(w.detach(), ch.w_bits, ch.prune))


@needs_int8
@pytest.mark.parametrize("choice", [Choice(8, 8), Choice(4, 4), Choice(1.58, 8), Choice(1, 8, 0.5)])
def test_uniform_policies_match_simulation_layer_by_layer(digits, ranges, choice):
    names, rng = ranges
    m = digits.model()
    pol = Policy.uniform(names, choice)
    checks = layer_errors(apply(m, pol, rng), convert(m, pol, rng), digits.sample_input(), torch.device("cpu"))
    assert [c.name for c in checks] == names
    assert {c.backend for c in checks} == {"cpu_int8"}
    worst = max(checks, key=lambda c: c.max_rel_err)
    assert worst.max_rel_err < BOUNDS["cpu_int8"], worst


@needs_int8
def test_whole_model_matches_simulation_and_keeps_accuracy(digits, ranges):
    names, rng = ranges
    m = digits.model()
    pol = Policy.from_choices(dict(zip(names, [Choice(8, 8), Choice(4, 8), Choice(4, 8), Choice(6, 8), Choice(4, 4),
                                               Choice(8, 8), Choice(2, 8), Choice(4, 8, 0.5), Choice(8, 8)])))
    sim, k = apply(m, pol, rng), convert(m, pol, rng)
    assert digits.evaluate(k) == pytest.approx(digits.evaluate(sim), abs=1 / 450)
    x = digits.eval[0][0]
    with torch.no_grad():
        assert float((k(x) - sim(x)).abs().max() / sim(x).abs().max()) < 1e-2


@needs_int8
@pytest.mark.parametrize("split", [False, True])
def test_saturation_free_split_is_exact(digits, split):
    """q_w = 2 hi + lo (linear) and q_x = 2 hi + lo (conv) give the exact int8 products."""
    m = digits.model()
    lin, conv = m.classifier[1], m.features[3]
    x = torch.rand(16, 256) * 3
    s, zp, _, qmax = act_qparams(-0.5, 3.0, 8)
    # 7-bit codes never saturate, so both forms must agree exactly with the float reference
    codes, scale = weight_codes(lin.weight, Choice(7, 8))
    y = Int8Linear(codes, scale, lin.bias, s, int(zp), qmax, split=split)(x)
    ref = torch.nn.functional.linear(fake_quant_act(x, -0.5, 3.0, 8), codes * scale[:, None], lin.bias.detach())
    assert float((y - ref).abs().max() / ref.abs().max()) < BOUNDS["cpu_int8"]
    xc = torch.rand(4, 16, 8, 8) * 3 - 0.5
    ccodes, cscale = weight_codes(conv.weight.reshape(32, -1), Choice(7, 8))
    ccodes = ccodes.reshape(conv.weight.shape)
    yc = Int8Conv2d(ccodes, cscale, None, s, int(zp), qmax, conv.stride, conv.padding, conv.dilation, 1, split=split)(xc)
    refc = torch.nn.functional.conv2d(fake_quant_act(xc, -0.5, 3.0, 8), ccodes * cscale[:, None, None, None],
                                      padding=conv.padding)
    assert float((yc - refc).abs().max() / refc.abs().max()) < BOUNDS["cpu_int8"]


def test_reference_backend_for_formats_without_a_kernel(digits):
    lin = digits.model().classifier[1]
    x = torch.randn(3, 256)
    q16 = QuantLinear.from_float(lin, Choice(16, 8), (-4.0, 4.0))
    assert q16.bits == 0 and q16.backend_for("cpu") == "reference"
    wo = QuantLinear.from_float(lin, Choice(4, 32))
    assert wo.backend_for("cpu") == "reference" and wo.backend_for("cuda") == "triton_wq"
    sim = apply(torch.nn.Sequential(lin), Policy.from_choices({"0": Choice(4, 32)}))
    with torch.no_grad():
        assert torch.allclose(wo(x), sim(x), rtol=1e-5, atol=1e-6)
    grouped = torch.nn.Conv2d(4, 8, 3, padding=1, groups=2)
    assert QuantConv2d.from_float(grouped, Choice(4, 8), (0.0, 1.0)).backend_for("cpu") == "reference"


def test_convert_leaves_float_layers_and_needs_ranges(digits, ranges):
    names, rng = ranges
    m = digits.model()
    pol = Policy.from_choices({names[0]: Choice(32, 32), names[1]: Choice(4, 8)})
    k = convert(m, pol, rng)
    mods = dict(k.named_modules())
    assert type(mods[names[0]]) is torch.nn.Conv2d and isinstance(mods[names[1]], QuantConv2d)
    assert mods[names[1]].packed.dtype == torch.int32 and mods[names[1]].bits == 4
    with pytest.raises(ValueError, match="activation ranges"):
        convert(m, pol, None)
    with pytest.raises(KeyError, match="nope"):
        convert(m, Policy.from_choices({"nope": Choice(4, 8)}), rng)


def test_layers_without_a_kernel_keep_the_simulations_numerics():
    """Float weights with a quantized input, pruned float weights and Conv1d run the simulation."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(24, 5), torch.nn.Linear(5, 3)).eval()
    x = torch.randn(2, 3, 8)
    pol = Policy.from_choices({"0": Choice(4, 8), "3": Choice(32, 8, 0.5), "4": Choice(4, 8)})
    r = {"0": {8: (-3.0, 3.0)}, "3": {8: (0.0, 2.0)}, "4": {8: (-2.0, 2.0)}}
    k = convert(m, pol, r)
    assert isinstance(k[4], QuantLinear) and type(k[0]) is torch.nn.Conv1d and type(k[3]) is torch.nn.Linear
    with torch.no_grad():
        assert torch.allclose(k(x), apply(m, pol, r)(x), atol=1e-5)
