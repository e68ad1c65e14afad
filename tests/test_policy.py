from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autocomp.policy import Choice, Policy, apply
from autocomp.quant import (binarize_weight, compress_weight, fake_quant_act, fake_quant_weight, prune_mask,
                            quantize_weight_codes, ternarize_weight)


def test_choice_key_round_trip():
    for c in (Choice(4, 8), Choice(1.58, 8), Choice(1, 32), Choice(8, 4, 0.5), Choice(32, 32)):
        assert Choice.from_key(c.key) == c
        assert Choice.from_dict(c.to_dict()) == c


def test_policy_json_round_trip_and_stable_id():
    p = Policy.from_choices({"a": Choice(4, 8), "b.c": Choice(2, 8, 0.25)})
    q = Policy.from_json(p.to_json())
    assert q == p and q.id == p.id
    assert Policy.from_choices({"a": Choice(4, 8), "b.c": Choice(3, 8, 0.25)}).id != p.id
    d = json.loads(p.to_json())
    assert d["version"] == 1 and [e["name"] for e in d["layers"]] == ["a", "b.c"]


def test_policy_from_newer_version_is_refused():
    d = Policy.from_choices({"a": Choice(4, 8)}).to_dict()
    d["version"] = 99
    with pytest.raises(ValueError, match="newer"):
        Policy.from_dict(d)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_weight_codes_in_range_and_per_channel(bits):
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-2, 1, 16)[:, None, None, None]
    codes, scale = quantize_weight_codes(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert codes.min() >= -qmax - 1 and codes.max() <= qmax
    assert torch.equal(codes, codes.round())
    assert scale.shape == (16,)
    # Per-channel scales follow each channel's magnitude.
    assert torch.all(scale[1:] > scale[:-1] * 0.5)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_mse_clipping_is_no_worse_than_full_range(bits):
    torch.manual_seed(1)
    w = torch.randn(32, 64)
    w[:, 0] *= 20  # outliers make clipping worthwhile
    q = fake_quant_weight(w, bits)
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().amax(dim=1, keepdim=True)
    full = (w / (amax / qmax)).round().clamp(-qmax - 1, qmax) * (amax / qmax)
    assert ((q - w) ** 2).sum() <= ((full - w) ** 2).sum() + 1e-6


def test_binary_and_ternary():
    torch.manual_seed(2)
    w = torch.randn(4, 10)
    codes, scale = binarize_weight(w)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.allclose(scale, w.abs().mean(dim=1))
    codes, scale = ternarize_weight(w)
    assert set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert (codes == 0).any()
    fq = fake_quant_weight(w, 1.58)
    assert fq.unique().numel() <= 3 * 4


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.floats(0.0, 0.95))
def test_prune_mask_exact_ratio(n, ratio):
    w = torch.randn(n)
    m = prune_mask(w, ratio)
    assert int((~m).sum()) == int(round(ratio * n))
    if m.any() and (~m).any():
        assert w[m].abs().min() >= w[~m].abs().max()


def test_compress_keeps_pruned_zero():
    w = torch.randn(8, 8)
    c = compress_weight(w, 4, 0.5)
    assert int((c == 0).sum()) >= 32


def test_act_fake_quant_levels():
    x = torch.linspace(-1, 3, 1000)
    q = fake_quant_act(x, -1.0, 3.0, 4)
    assert q.unique().numel() <= 16
    assert (q - x).abs().max() <= 4 / 15 / 2 + 1e-6


def test_apply_returns_copy_and_leaves_model_untouched(digits, digits_layers):
    from autocomp.calibrate import activation_ranges, activation_stats

    model = digits.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [l.name for l in digits_layers]
    ranges = activation_ranges(activation_stats(model, names, digits.calib), [8])
    pol = Policy.uniform(names, Choice(2, 8, 0.5))
    small = apply(model, pol, ranges)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model._forward_pre_hooks and all(not m._forward_pre_hooks for m in model.modules())
    mods = dict(small.named_modules())
    for n in names:
        w = mods[n].weight
        assert float((w == 0).float().mean()) >= 0.5 - 1e-6
        assert w.unique().numel() <= 4 * w.shape[0] + 1
    # 2-bit weights and half pruned: accuracy drops, but the copy still runs.
    assert digits.evaluate(small) < digits.evaluate(model)


def test_apply_needs_ranges_for_activation_quant(digits, digits_layers):
    pol = Policy.uniform([l.name for l in digits_layers], Choice(8, 8))
    with pytest.raises(ValueError, match="activation ranges"):
        apply(digits.model(), pol)
    assert digits.evaluate(apply(digits.model(), Policy.uniform([l.name for l in digits_layers], Choice(8, 32)))) > 0.95


def test_apply_rejects_unknown_layer(digits):
    with pytest.raises(KeyError, match="nope"):
        apply(digits.model(), Policy.from_choices({"nope": Choice(4, 32)}))
