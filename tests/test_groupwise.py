"""Group-wise and asymmetric weight quantization: numerics, choice keys, stored size, spaces."""
from __future__ import annotations

import json

import pytest
import torch

from autocomp.budget import CostModel
from autocomp.costs import get_cost_metric, meta_bits
from autocomp.errors import SearchSpaceError
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.quant import fake_quant_weight, group_count, quantize_weight_codes, quantize_weight_groups
from autocomp.search_spaces import load_space, space_from_dict


@pytest.fixture(scope="module")
def w():
    return torch.randn(6, 40, generator=torch.Generator().manual_seed(0))


def test_groups_have_their_own_scale(w):
    gq = quantize_weight_groups(w, 4, group=8)
    assert gq.scales.shape == (6, 5) and gq.zeros is None
    # Each group alone is the per-channel quantization of that slice.
    for j in range(5):
        codes, scale = quantize_weight_codes(w[:, 8 * j: 8 * j + 8], 4)
        assert torch.equal(gq.codes[:, 8 * j: 8 * j + 8], codes)
        assert torch.allclose(gq.scales[:, j], scale)


def test_short_last_group(w):
    gq = quantize_weight_groups(w, 4, group=16)        # 40 = 16 + 16 + 8
    assert group_count(40, 16) == 3 and gq.scales.shape == (6, 3)
    codes, scale = quantize_weight_codes(w[:, 32:], 4)
    assert torch.equal(gq.codes[:, 32:], codes) and torch.allclose(gq.scales[:, 2], scale)
    assert gq.dequantize().shape == w.shape


def test_group_longer_than_row_is_per_channel(w):
    per_channel = fake_quant_weight(w, 4)
    assert torch.equal(fake_quant_weight(w, 4, group=64), per_channel)
    assert torch.equal(quantize_weight_groups(w, 4).dequantize(), per_channel)


def test_smaller_groups_lower_the_error(w):
    errs = [float(((fake_quant_weight(w, 3, group=g) - w) ** 2).sum()) for g in (None, 20, 8, 4)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0]


def test_asymmetric_range_and_exact_zero():
    x = torch.rand(4, 32, generator=torch.Generator().manual_seed(1)) + 0.5   # all positive
    x[0, 3] = 0.0
    gq = quantize_weight_groups(x, 4, group=16, zero_point=True)
    assert gq.zeros is not None and gq.zeros.shape == (4, 2)
    assert float(gq.codes.min()) >= 0 and float(gq.codes.max()) <= 15
    deq = gq.dequantize()
    assert float(deq[0, 3]) == 0.0
    # An all-positive tensor wastes half of a symmetric grid: the zero point must do better.
    sym = quantize_weight_groups(x, 4, group=16).dequantize()
    assert float(((deq - x) ** 2).sum()) < float(((sym - x) ** 2).sum())


def test_conv_groups_run_over_flattened_fan_in():
    wc = torch.randn(3, 4, 3, 3, generator=torch.Generator().manual_seed(2))   # fan-in 36
    gq = quantize_weight_groups(wc, 4, group=16)
    assert gq.scales.shape == (3, 3) and gq.dequantize().shape == wc.shape
    flat = quantize_weight_groups(wc.reshape(3, -1), 4, group=16)
    assert torch.equal(gq.codes, flat.codes)


def test_bad_group_and_bits(w):
    with pytest.raises(ValueError):
        quantize_weight_groups(w, 4, group=0)
    with pytest.raises(ValueError):
        quantize_weight_groups(w, 1, group=8, zero_point=True)


# --- choices ---------------------------------------------------------------------------------

def test_choice_keys_round_trip():
    for c in (Choice(4, 8), Choice(4, 8, 0.5), Choice(4, 32, group=128), Choice(4, 32, group=128, zero_point=True),
              Choice(4, 8, 0.5, 64, True), Choice(8, 32, zero_point=True), Choice(1.58, 8, group=32)):
        assert Choice.from_key(c.key) == c
        assert Choice.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert [Choice(4, 8).key, Choice(4, 8, 0.5).key] == ["w4a8", "w4a8p0.5"]
    assert Choice(4, 32, group=128).key == "w4a32g128"
    assert Choice(4, 32, group=128, zero_point=True).key == "w4a32g128z"
    assert Choice(4, 8, 0.5, 64, True).key == "w4a8p0.5g64z"


def test_per_channel_dicts_and_ids_unchanged():
    assert Choice(4, 8, 0.5).to_dict() == {"w_bits": 4, "a_bits": 8, "prune": 0.5}
    old = {"layers": [{"name": "a", "w_bits": 4, "a_bits": 8, "prune": 0.0}], "version": 1}
    pol = Policy.from_dict(old)
    assert pol["a"] == Choice(4, 8, 0.0)
    # The id is the hash of exactly the dict every earlier version wrote.
    import hashlib

    blob = json.dumps([["a", {"w_bits": 4, "a_bits": 8, "prune": 0.0}]], sort_keys=True)
    assert pol.id == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert Policy.from_choices({"a": Choice(4, 8, group=128)}).id != pol.id


def test_choices_sort_with_and_without_groups():
    cs = [Choice(4, 32, group=128), Choice(4, 32), Choice(2, 32, group=64, zero_point=True)]
    assert [c.key for c in sorted(cs)] == ["w2a32g64z", "w4a32", "w4a32g128"]


# --- stored size ------------------------------------------------------------------------------

def _layer(rows: int, k: int) -> LayerInfo:
    return LayerInfo("fc", "Linear", (rows, k), rows * k, 0, rows * k, (k,), (rows,), 0, roles=("linear",))


def test_size_counts_scales_and_zero_points():
    l = _layer(64, 300)                          # 300 = 2 x 128 + 44: three groups per row
    size = get_cost_metric("size")
    cm = CostModel([l])
    codes = 64 * 300 * 4
    assert size.layer_cost(l, Choice(4, 32), cm.ctx) == codes / 8          # per channel: codes only
    assert size.layer_cost(l, Choice(4, 32, group=128), cm.ctx) == (codes + 64 * 3 * 16) / 8
    assert size.layer_cost(l, Choice(4, 32, group=128, zero_point=True), cm.ctx) == (codes + 64 * 3 * 20) / 8
    assert size.layer_cost(l, Choice(8, 32, zero_point=True), cm.ctx) == (64 * 300 * 8 + 64 * 24) / 8
    assert size.layer_cost(l, Choice(32, 32, group=128), cm.ctx) == 64 * 300 * 4   # float: no scales
    cs = [Choice(4, 32), Choice(4, 32, group=128), Choice(2, 8, 0.5, 32, True)]
    vec = size.layer_costs(l, cs, cm.ctx)
    assert list(vec) == [size.layer_cost(l, c, cm.ctx) for c in cs]
    avg = get_cost_metric("avg_bits")
    assert avg.layer_cost(l, Choice(4, 32, group=128), cm.ctx) == pytest.approx(4 + 16 / 128 * 3 / (300 / 128))
    assert meta_bits(l, Choice(4, 8)) == 0.0


# --- search spaces ----------------------------------------------------------------------------

def test_space_group_and_zero_point_keys():
    sp = space_from_dict({"w_bits": [4, 8], "a_bits": [32], "group": ["channel", 64], "zero_point": [False, True]})
    keys = [c.key for c in sp.choices_for(_layer(4, 4), 1)]
    assert keys == ["w4a32", "w4a32z", "w4a32g64", "w4a32g64z", "w8a32", "w8a32z", "w8a32g64", "w8a32g64z"]
    sp = space_from_dict({"w_bits": [4, 32], "group": [128], "overrides": [{"match": "fc", "group": ["channel"]}]})
    assert [c.key for c in sp.choices_for(_layer(4, 4), 1)] == ["w4a8", "w32a8"]


def test_space_explicit_choices():
    sp = load_space("int4_int8")
    assert [c.key for c in sp.choices_for(_layer(4, 4), 1)] == ["w4a32g128", "w8a32z"]
    assert sp.w_bits == (4, 8)


@pytest.mark.parametrize("d, msg", [
    ({"w_bits": [4], "group": [0]}, "'group' has 0"),
    ({"w_bits": [4], "group": ["row"]}, "'group' has 'row'"),
    ({"w_bits": [4], "group": [True]}, "'group' has True"),
    ({"w_bits": [4], "zero_point": "yes"}, "'zero_point' must be true, false"),
    ({"w_bits": [1, 4], "zero_point": True}, "zero points need w_bits of 2 or more"),
    ({"choices": ["w4x8"]}, "'choices' has 'w4x8'"),
    ({"choices": ["w4a32"], "w_bits": [4]}, "cannot be combined with 'w_bits'"),
    ({"choices": ["w4a32"], "overrides": [{"match": "fc", "w_bits": [8]}]}, "give the override its own 'choices'"),
])
def test_bad_group_keys_are_clear(d, msg):
    with pytest.raises(SearchSpaceError, match=msg):
        space_from_dict(d)
