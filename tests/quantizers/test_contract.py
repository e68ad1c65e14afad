"""The quantizer contract (:mod:`autocomp.testing.quantizers`) on every registered quantizer,
then the format check itself: it passes RTN's weights and rejects weights off the grid."""
from __future__ import annotations

import pytest
import torch

from autocomp.policy import Choice
from autocomp.quant import compress_weight
from autocomp.quantizers import list_quantizers
from autocomp.testing import QuantizerContract
from autocomp.testing.quantizers import assert_representable

# Options that keep the suite lean without changing what is checked (adaround's training steps:
# the contract is about shape, format and determinism, not how far the rounding is trained).
_FAST = {"adaround": {"iters": 40}}

# One contract class per registered quantizer, so a newly registered one is held to it too.
for _name in list_quantizers():
    globals()[f"Test{_name.title().replace('_', '')}"] = type(
        f"Test{_name.title().replace('_', '')}", (QuantizerContract,),
        {"quantizer": _name, "options": _FAST.get(_name, {})})


@pytest.mark.parametrize("choice", [Choice(2, 32), Choice(3, 32, group=8), Choice(4, 32, group=8, zero_point=True),
                                    Choice(8, 32, zero_point=True), Choice(1, 32), Choice(1.58, 32, group=8),
                                    Choice(4, 32, prune=0.5)])
def test_format_check_passes_rtn_and_fails_off_grid(choice):
    torch.manual_seed(0)
    w = torch.randn(16, 20)
    q = compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point)
    assert_representable(q, choice)
    nudged = q.clone()
    nudged[3, 5] += 0.37 * float(q.abs().max())      # one value off its group's grid
    with pytest.raises(AssertionError, match="1 of"):
        assert_representable(nudged, choice)
    with pytest.raises(AssertionError):
        assert_representable(w, choice)


def test_format_check_uses_the_input_scale():
    torch.manual_seed(1)
    w = torch.randn(8, 12)
    s = torch.rand(12) + 0.5
    q = compress_weight(w * s, 4, group=4) / s          # AWQ-style: w * s is on the grid
    assert_representable(q, Choice(4, 32, group=4), input_scale=s)
    with pytest.raises(AssertionError):
        assert_representable(q, Choice(4, 32, group=4))


def test_format_check_rejects_codes_out_of_range():
    w = torch.tensor([[-8.0, 7.0, 1.0, 2.0]])
    assert_representable(w, Choice(4, 32))                # codes -8..7 at scale 1
    with pytest.raises(AssertionError):
        assert_representable(w, Choice(3, 32))            # needs codes beyond -4..3


@pytest.mark.parametrize("name", ["gptq", "awq", "adaround"])
def test_statistics_quantizers_open_a_layer_the_same_way(name):
    """Float bits: the weight as is; an embedding: rtn's; float bits with pruning: rtn's magnitude
    pruning, except gptq's own (SparseGPT-style) sweep; anything else needs the statistics."""
    from autocomp.quantizers import get_quantizer

    torch.manual_seed(2)
    q = get_quantizer(name)
    lin, emb = torch.nn.Linear(12, 6), torch.nn.Embedding(20, 12)
    w = lin.weight.detach()
    res = q.quantize_layer("l", lin, Choice(32, 32), None)
    assert torch.equal(res.weight, w) and res.weight.data_ptr() != w.data_ptr()
    assert torch.equal(q.quantize_layer("e", emb, Choice(3, 32), None).weight, compress_weight(emb.weight.detach(), 3))
    pruned = Choice(32, 32, prune=0.5)
    if name == "gptq":     # prunes float layers itself: that needs the Hessian
        with pytest.raises(ValueError, match="'hessian' statistic of layer 'l'"):
            q.quantize_layer("l", lin, pruned, None)
    else:
        assert torch.equal(q.quantize_layer("l", lin, pruned, None).weight, compress_weight(w, 32, 0.5))
    with pytest.raises(ValueError, match=rf"quantizer '{name}' needs the .*'hessian'.* of layer 'l'"):
        q.quantize_layer("l", lin, Choice(4, 32), None)
