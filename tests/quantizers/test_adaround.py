"""``adaround``: below rtn's output error on real trained digits layers (held-out inputs), on
rtn's own grid (same scales, each code rtn's floor or floor + 1), pruned weights zero."""
from __future__ import annotations

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.modules import capture_inputs, weight_of
from autocomp.policy import Choice
from autocomp.quant import compress_weight, prune_mask, quantize_weight_groups
from autocomp.quantizers import collect_stats, get_quantizer, input_rows
from autocomp.testing import _data
from autocomp.testing.quantizers import assert_representable

LAYERS = ("features.7", "classifier.1")         # a 3x3 conv (K = 288) and a linear layer (K = 256)
ITERS = 200


@pytest.fixture(scope="module")
def layers():
    wl = _data.workload("digits")
    model = wl.model()
    stats = collect_stats(model, wl.calib, LAYERS, {"hessian"})
    mods = dict(model.named_modules())
    with capture_inputs(model, LAYERS) as seen, torch.no_grad():
        model(wl.eval[0][0][:256])
    return {n: (mods[n], stats[n], input_rows(mods[n], seen[n][0])) for n in LAYERS}


def _err(module: torch.nn.Module, wq: torch.Tensor, x: torch.Tensor) -> float:
    w = weight_of(module).detach().reshape(module.weight.shape[0], -1)
    return float(((x @ (w - wq.reshape(w.shape)).t()) ** 2).sum() / ((x @ w.t()) ** 2).sum())


@pytest.mark.parametrize("choice", [Choice(2, 32), Choice(3, 32), Choice(4, 32), Choice(3, 32, group=32, zero_point=True)])
def test_held_out_output_error_below_rtn(layers, choice):
    q = get_quantizer("adaround", iters=ITERS)
    for n, (mod, st, x) in layers.items():
        ours = q.quantize_layer(n, mod, choice, st).weight
        rtn = compress_weight(weight_of(mod).detach(), choice.w_bits, choice.prune, choice.group, choice.zero_point)
        assert _err(mod, ours, x) < _err(mod, rtn, x), (n, choice.key)


@pytest.mark.parametrize("choice", [Choice(3, 32), Choice(2, 32, group=32, zero_point=True), Choice(3, 32, prune=0.5)])
def test_on_rtn_s_grid_codes_floor_or_floor_plus_one(layers, choice):
    q = get_quantizer("adaround", iters=ITERS)
    for n, (mod, st, _) in layers.items():
        w = weight_of(mod).detach().reshape(mod.weight.shape[0], -1)
        mask = prune_mask(w, choice.prune) if choice.prune else torch.ones_like(w, dtype=torch.bool)
        ours = q.quantize_layer(n, mod, choice, st).weight.reshape(w.shape)
        assert_representable(ours, choice)
        gq = quantize_weight_groups(w * mask, choice.w_bits, choice.group, choice.zero_point)
        scale = gq.expand(gq.scales)
        zero = gq.expand(gq.zeros) if gq.zeros is not None else torch.zeros_like(scale)
        codes = ours / scale + zero
        assert torch.allclose(codes, codes.round(), atol=1e-3), n
        move = codes.round() - (w * mask / scale + zero).floor()
        lo, hi = (0, 2 ** choice.w_bits - 1) if choice.zero_point else (-2 ** (choice.w_bits - 1), 2 ** (choice.w_bits - 1) - 1)
        clamped = (codes.round() == lo) | (codes.round() == hi)
        assert bool(((move == 0) | (move == 1) | clamped).all()), n
        assert bool((ours[~mask] == 0).all()), n
        changed = (ours != compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point)).float().mean()
        assert 0 < float(changed) < 0.5, (n, float(changed))      # some roundings flipped, most kept


def test_binary_and_quantized_layers_without_statistics():
    lin = torch.nn.Linear(8, 4)
    st = collect_stats(torch.nn.Sequential(lin), [torch.randn(64, 8)], ["0"], {"hessian"})["0"]
    q = get_quantizer("adaround", iters=20)
    assert torch.equal(q.quantize_layer("0", lin, Choice(1, 32), st).weight, compress_weight(lin.weight.detach(), 1))
    with pytest.raises(ValueError, match="'0'"):
        q.quantize_layer("0", lin, Choice(3, 32), None)


@pytest.mark.parametrize("options, match", [({"iters": 0}, "iters"), ({"lr": 0}, "lr"), ({"warmup": 1.0}, "warmup")])
def test_bad_options_are_one_line_errors(options, match):
    with pytest.raises(AutocompError, match=match):
        get_quantizer("adaround", **options)
