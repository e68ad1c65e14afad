"""``bias_correction``: the mean output shift removed in closed form (linear and conv layers),
BatchNorm re-estimation on the compressed model, and composed specs (``base+bias_correction``)."""
from __future__ import annotations

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.modules import weight_of
from autocomp.policy import Choice, Policy
from autocomp.quantizers import collect_stats, get_quantizer, list_quantizers, quantizer_class
from autocomp.quantizers.compose import PostPass
from autocomp.testing import QuantizerContract, _data

BASES = [n for n in list_quantizers() if not issubclass(quantizer_class(n), PostPass)]
FAST = {"adaround": {"iters": 50}}


def _offset_inputs(k: int, rows: int = 1024) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(rows, k) * 0.5 + torch.linspace(-1, 2, k)   # non-zero mean per feature


@pytest.mark.parametrize("base", BASES)
def test_linear_mean_output_shift_removed_in_closed_form(base):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(24, 6))
    x = _offset_inputs(24)
    q = get_quantizer(f"{base}+bias_correction", **FAST.get(base, {}))
    stats = collect_stats(model, [x], ["0"], q.needs)
    policy = Policy.from_choices({"0": Choice(2, 32)})
    plain = get_quantizer(base, **FAST.get(base, {})).apply(model, policy, stats=stats)
    fixed = q.apply(model, policy, stats=stats)
    with torch.no_grad():
        want, before, after = model(x).mean(0), plain(x).mean(0), fixed(x).mean(0)
    assert float((before - want).abs().max()) > 1e-2          # the quantized layer did shift its mean
    assert torch.allclose(after, want, atol=1e-4)
    # the same weights as the base, and the bias moved by exactly (W - Wq) mu
    assert torch.equal(fixed[0].weight, plain[0].weight)
    w, wq = model[0].weight.detach(), plain[0].weight.detach()
    assert torch.allclose(fixed[0].bias - model[0].bias, (w - wq) @ x.mean(0), atol=1e-5)


def test_conv_mean_over_all_positions_preserved_per_channel():
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, stride=1, bias=False)   # no bias: one is created
    model = torch.nn.Sequential(conv)
    x = torch.randn(64, 3, 7, 7) + torch.tensor([0.5, -1.0, 2.0])[None, :, None, None]
    q = get_quantizer("rtn+bias_correction")
    policy = Policy.from_choices({"0": Choice(2, 32)})
    fixed = q.apply(model, policy, stats=collect_stats(model, [x], ["0"], q.needs))
    plain = get_quantizer("rtn").apply(model, policy)
    with torch.no_grad():
        want, before, after = (m(x).mean(dim=(0, 2, 3)) for m in (model, plain, fixed))
    assert float((before - want).abs().max()) > 1e-2
    assert torch.allclose(after, want, atol=1e-4)


def _conv_out(model: torch.nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    out = []
    h = dict(model.named_modules())[name].register_forward_hook(lambda m, a, o: out.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    return out[0]


def test_batchnorm_after_a_compressed_conv_is_re_estimated_on_its_outputs():
    model = _data.workload("digits").model()
    batch = _data.workload("digits").calib[0]
    names = [l.name for l in _data.layers("digits")]
    # features.0 compressed (its BN features.1 re-estimated), features.3 float (features.4 kept)
    choices = {n: Choice(3, 32) for n in names}
    choices["features.3"] = Choice(32, 32)
    policy = Policy.from_choices(choices)
    q = get_quantizer("rtn+bias_correction")
    stats = collect_stats(model, [batch], names, q.needs)
    small = q.apply(model, policy, stats=stats, batches=[batch])
    y = _conv_out(small, "features.0", batch[0])
    bn, old = small.features[1], model.features[1]
    assert torch.allclose(bn.running_mean, y.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, y.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(bn.running_mean, old.running_mean, atol=1e-3)
    assert torch.equal(small.features[4].running_mean, model.features[4].running_mean)
    assert not small.training and not small.features[1].training
    # without batches, or with bn_reestimate off, BatchNorm keeps the float model's statistics
    for kept in (q.apply(model, policy, stats=stats),
                 get_quantizer("rtn+bias_correction", bn_reestimate=False).apply(model, policy, stats=stats,
                                                                                  batches=[batch])):
        assert torch.equal(kept.features[1].running_mean, old.running_mean)


def test_folded_batchnorm_model_is_corrected_by_the_bias_alone():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 36, 3))
    x = torch.rand(32, 2, 6, 6) + 0.5
    q = get_quantizer("awq+bias_correction")
    policy = Policy.from_choices({"0": Choice(2, 32), "3": Choice(2, 32)})
    small = q.apply(model, policy, stats=collect_stats(model, [x], ["0", "3"], q.needs), batches=[x])
    want = _conv_out(model, "0", x).mean(dim=(0, 2, 3))
    assert torch.allclose(_conv_out(small, "0", x).mean(dim=(0, 2, 3)), want, atol=1e-4)


def test_alone_it_corrects_rtn():
    lin = torch.nn.Linear(8, 3)
    x = _offset_inputs(8, 256)
    st = collect_stats(torch.nn.Sequential(lin), [x], ["0"], {"mean"})["0"]
    a = get_quantizer("bias_correction").quantize_layer("0", lin, Choice(2, 32), st)
    b = get_quantizer("rtn+bias_correction").quantize_layer("0", lin, Choice(2, 32), st)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias_delta, b.bias_delta)
    assert float(a.bias_delta.abs().max()) > 0


@pytest.mark.parametrize("spec, match", [
    ("gptq+", "empty part after"), ("+rtn", "empty part before"), ("rtn++bias_correction", "empty part"),
    ("bias_correction+bias_correction", "appears twice"), ("rtn+awq", "must come first"),
    ("bias_correction+rtn", "must come first"), ("nope+bias_correction", "unknown quantizer 'nope'"),
    ("awq(clip=)+bias_correction", "cannot read"), ("awq(1)", "cannot read"),
    ("awq(grid=0)", "grid must be"), ("awq(nothing=1)+bias_correction", "has no option 'nothing'"),
])
def test_bad_specs_are_one_line_errors(spec, match):
    with pytest.raises(AutocompError, match=match) as e:
        get_quantizer(spec)
    assert "\n" not in str(e.value)


def test_spec_options_needs_and_round_trip():
    q = get_quantizer("awq+bias_correction", clip=False, bn_reestimate=False)
    assert q.spec == "awq(clip=False)+bias_correction(bn_reestimate=False)"
    assert q.needs == get_quantizer("awq").needs | get_quantizer("bias_correction").needs
    assert get_quantizer(q.spec).spec == q.spec
    assert get_quantizer("awq(grid=5)").options.grid == 5
    with pytest.raises(AutocompError, match="has no option 'iters'"):
        get_quantizer("awq+bias_correction", iters=3)


class TestAwqBiasCorrectionContract(QuantizerContract):
    """The quantizer contract on a composed spec."""

    quantizer = "awq+bias_correction"
    bad_options = [({"grid": 0}, "grid")]

    def test_registered_with_known_statistics(self, q):
        assert q.spec == self.quantizer and {"mean", "absmean", "hessian"} <= set(q.needs)
