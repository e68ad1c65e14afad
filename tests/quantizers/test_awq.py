"""``awq``: below rtn's output error on real trained layers (held-out inputs), representable as
codes x group scales x a per-input-channel fp16 scale, rtn where it does not apply."""
from __future__ import annotations

import pytest
import torch

from autocomp.modules import capture_inputs, quantizable_layers, weight_of
from autocomp.policy import Choice
from autocomp.quant import compress_weight, prune_mask
from autocomp.quantizers import collect_stats, get_quantizer, input_rows
from autocomp.quantizers.awq import output_error
from autocomp.testing import _data
from autocomp.testing.quantizers import assert_representable


def _layers(spec: str):
    """A trained model's layers, their calibration statistics, and held-out (eval) input rows."""
    wl = _data.workload(spec)
    model = wl.model()
    names = [n for n, m in quantizable_layers(model) if weight_of(m).dim() >= 2 and type(m).__name__ != "Embedding"]
    stats = collect_stats(model, wl.calib, names, {"hessian", "absmean", "mean"})
    mods = dict(model.named_modules())
    with capture_inputs(model, names) as seen, torch.no_grad():
        model(wl.eval[0][0][:256])
    held = {n: input_rows(mods[n], seen[n][0]) for n in names}
    return mods, names, stats, held


@pytest.fixture(scope="module")
def digits_layers():
    return _layers("digits")


@pytest.fixture(scope="module")
def vit_layers():
    return _layers("digits-vit")


_MEMO: dict = {}


def awq_result(mods, n, choice, stats):
    """One awq result per (layer, choice) for the whole module: the search is the slow part."""
    key = (id(mods), n, choice)
    if key not in _MEMO:
        _MEMO[key] = get_quantizer("awq").quantize_layer(n, mods[n], choice, stats[n])
    return _MEMO[key]


def held_out_error(module: torch.nn.Module, wq: torch.Tensor, x: torch.Tensor) -> float:
    w = weight_of(module).detach().reshape(module.weight.shape[0], -1)
    return float(((x @ (w - wq.reshape(w.shape)).t()) ** 2).sum() / ((x @ w.t()) ** 2).sum())


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_held_out_output_error_below_rtn_on_every_digits_layer(digits_layers, bits):
    mods, names, stats, held = digits_layers
    rtn = get_quantizer("rtn")
    tot_awq = tot_rtn = 0.0
    for n in names:
        c = Choice(bits, 32)
        e_awq = held_out_error(mods[n], awq_result(mods, n, c, stats).weight, held[n])
        e_rtn = held_out_error(mods[n], rtn.quantize_layer(n, mods[n], c, stats[n]).weight, held[n])
        assert e_awq < e_rtn, (n, bits, e_awq, e_rtn)
        tot_awq, tot_rtn = tot_awq + e_awq, tot_rtn + e_rtn
    assert tot_awq < 0.8 * tot_rtn


@pytest.mark.parametrize("choice", [Choice(3, 32, group=16), Choice(4, 32, group=16, zero_point=True)])
def test_held_out_output_error_below_rtn_on_vit_linear_layers(vit_layers, choice):
    mods, names, stats, held = vit_layers
    rtn = get_quantizer("rtn")
    e_awq = sum(held_out_error(mods[n], awq_result(mods, n, choice, stats).weight, held[n]) for n in names)
    e_rtn = sum(held_out_error(mods[n], rtn.quantize_layer(n, mods[n], choice, stats[n]).weight, held[n]) for n in names)
    assert e_awq < 0.9 * e_rtn, (choice.key, e_awq, e_rtn)


@pytest.mark.parametrize("choice", [Choice(3, 32), Choice(3, 32, prune=0.5, group=16), Choice(1.58, 32)])
def test_calibration_error_never_above_rtn(digits_layers, choice):
    mods, names, stats, _ = digits_layers
    for n in names:
        w = weight_of(mods[n]).detach().reshape(mods[n].weight.shape[0], -1)
        h = stats[n].hessian
        ours = awq_result(mods, n, choice, stats).weight.reshape(w.shape)
        theirs = compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point)
        assert output_error(ours - w, h) <= output_error(theirs - w, h) * (1 + 1e-6), (n, choice.key)


def test_representable_with_an_fp16_input_scale_per_input_channel(digits_layers, vit_layers):
    used = 0
    for (mods, names, stats, _), c in ((digits_layers, Choice(3, 32)), (vit_layers, Choice(4, 32, group=16, zero_point=True))):
        for n in names:
            res = awq_result(mods, n, c, stats)
            assert_representable(res.weight, c, res.input_scale)
            if res.input_scale is None:
                continue
            used += 1
            s = res.input_scale
            assert torch.equal(s, s.half().float()) and bool((s > 0).all())
            if mods[n].weight.dim() == 4:     # a conv's scale: one value per input channel
                per = s.reshape(mods[n].weight.shape[1], -1)
                assert torch.equal(per, per[:, :1].expand_as(per)), n
    assert used > 0


def test_scale_search_alone_protects_salient_channels():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    # a few input channels carry large activations, as in transformer layers
    gain = torch.ones(64)
    gain[:4] = 20.0
    x = torch.randn(2048, 64) * gain
    q = get_quantizer("awq", clip=False)
    st = collect_stats(torch.nn.Sequential(lin), [x[:1024]], ["0"], q.needs)["0"]
    # in groups, as AWQ is used on transformers (per channel, the scaled-up columns would stretch
    # every row's range and the search rightly keeps rtn)
    res = q.quantize_layer("0", lin, Choice(3, 32, group=16), st)
    rtn = compress_weight(lin.weight.detach(), 3, group=16)
    assert res.input_scale is not None and float(res.input_scale[:4].min()) > float(res.input_scale[4:].max())
    assert held_out_error(lin, res.weight, x[1024:]) < 0.9 * held_out_error(lin, rtn, x[1024:])


def test_quantized_inputs_fall_back_to_rtn(digits_layers):
    mods, names, stats, _ = digits_layers
    for n in names[-2:]:
        c = Choice(4, 8, group=16)
        res = get_quantizer("awq").quantize_layer(n, mods[n], c, stats[n])
        assert res.input_scale is None
        assert torch.equal(res.weight, compress_weight(weight_of(mods[n]).detach(), 4, group=16))


def test_pruned_weights_stay_zero(digits_layers):
    mods, names, stats, _ = digits_layers
    for n in names:
        w = weight_of(mods[n]).detach()
        res = awq_result(mods, n, Choice(3, 32, prune=0.5, group=16), stats)
        pruned = ~prune_mask(w, 0.5)
        assert bool((res.weight[pruned] == 0).all()), n


def test_bad_grid_is_a_one_line_error():
    from autocomp.errors import AutocompError

    with pytest.raises(AutocompError, match="grid must be a positive integer"):
        get_quantizer("awq", grid=0)


def test_clip_searches_run_once_per_layer_not_once_per_alpha(digits_layers, monkeypatch):
    """The α search rounds each candidate once on its full range; rtn's 15-ratio MSE search and
    the 21-ratio output-error search then run for the chosen α only."""
    import autocomp.quant as quant
    import autocomp.quantizers.awq as awq

    mods, names, stats, _ = digits_layers
    n = names[-2]                       # a linear layer: per channel, one rounding call per candidate
    calls = {"mse": 0, "ratios": []}
    real_codes, real_clipped = quant.quantize_weight_codes, awq._clipped

    def codes(w, bits, *rest):
        calls["mse"] += 1
        return real_codes(w, bits, *rest)

    def clipped(rows, bits, zero_point, ratio):
        calls["ratios"].append(ratio)
        return real_clipped(rows, bits, zero_point, ratio)

    monkeypatch.setattr(quant, "quantize_weight_codes", codes)
    monkeypatch.setattr(awq, "_clipped", clipped)
    res = get_quantizer("awq", grid=20).quantize_layer(n, mods[n], Choice(3, 32), stats[n])
    assert res.input_scale is not None
    # rtn's result, and the chosen α's MSE-clipped rounding: two MSE searches in all
    assert calls["mse"] == 2
    # 20 full-range roundings (α = 0 and 19 others), then one output-error search of 21 ratios
    assert calls["ratios"] == [1.0] * 20 + list(awq._CLIPS)
