"""The ``absmax`` quantizer: full-range grids (each group's extreme weight kept exactly, on the
signed grid's extra code), weights in the stored format, different from rtn's clipped ones, and
usable per layer beside rtn."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from autocomp.modules import activation_layers
from autocomp.policy import Choice, Policy
from autocomp.quant import compress_weight, prune_mask, signed_absmax_scale, split_groups
from autocomp.quantizers import get_quantizer
from autocomp.quantizers.per_layer import for_policy
from autocomp.testing.quantizers import assert_representable

CHOICES = [Choice(2, 32), Choice(3, 32, group=8), Choice(4, 32, group=16), Choice(8, 32), Choice(3, 32, prune=0.5)]


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.key)
def test_extremes_exact_on_the_grids_extra_code(choice):
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(40, 24)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(24, 40, generator=g) * torch.rand(24, 1, generator=g))
    w = lin.weight.detach()
    q = get_quantizer("absmax").quantize_layer("l", lin, choice, None).weight
    assert_representable(q, choice)
    kept = w if choice.prune == 0 else w * prune_mask(w, choice.prune)   # rtn and absmax prune alike
    for wr, qr in zip(split_groups(kept, choice.group), split_groups(q, choice.group)):
        idx = wr.abs().argmax(dim=1, keepdim=True)
        assert torch.equal(qr.gather(1, idx), wr.gather(1, idx))              # the extreme, exactly
        s = signed_absmax_scale(wr, int(choice.w_bits))
        live = wr.abs().amax(dim=1) > 0                                    # rows pruned away have no extreme
        code = (qr.gather(1, idx)[:, 0] / s)[live]
        assert torch.allclose(code, torch.full_like(code, -2.0 ** (choice.w_bits - 1)))
    if choice.w_bits <= 3 and choice.prune == 0:
        assert not torch.equal(q, compress_weight(w, choice.w_bits, 0.0, choice.group))   # rtn clips somewhere


def test_asymmetric_takes_the_full_range():
    torch.manual_seed(1)
    w = torch.randn(6, 32)
    q = compress_weight(w, 3, group=8, zero_point=True, clip=False)
    assert_representable(q, Choice(3, 32, group=8, zero_point=True))
    for wr, qr in zip(split_groups(w, 8), split_groups(q, 8)):
        step = (wr.amax(dim=1) - wr.amin(dim=1)) / 7
        assert bool(((qr.amax(dim=1) - qr.amin(dim=1)) >= (wr.amax(dim=1) - wr.amin(dim=1)) - step * 0.51).all())


def test_per_layer_beside_rtn(digits):
    model = digits.model()
    names = [n for n, _ in activation_layers(model)]
    alone = {q: dict(get_quantizer(q).apply(model, Policy.uniform(names, Choice(2, 32))).named_modules())
             for q in ("rtn", "absmax")}
    pol = Policy.from_choices({n: dataclasses.replace(Choice(2, 32), quantizer="absmax" if i % 2 else None)
                               for i, n in enumerate(names)})
    mods = dict(for_policy(get_quantizer("rtn"), pol).apply(model, pol).named_modules())
    for i, n in enumerate(names):
        assert torch.equal(mods[n].weight, alone["absmax" if i % 2 else "rtn"][n].weight), n
    assert any(not torch.equal(alone["rtn"][n].weight, alone["absmax"][n].weight) for n in names)


def test_gptq_without_clip_rounds_its_fallback_layers_on_the_full_range_too():
    """gptq(clip=false)'s embeddings (no Hessian: rtn's rounding) take the absmax grid, as its
    swept layers do; the default keeps rtn's clipped grid."""
    emb = torch.nn.Embedding(30, 16)
    full = get_quantizer("gptq", clip=False).quantize_layer("e", emb, Choice(3, 32), None).weight
    assert torch.equal(full, get_quantizer("absmax").quantize_layer("e", emb, Choice(3, 32), None).weight)
    clipped = get_quantizer("gptq").quantize_layer("e", emb, Choice(3, 32), None).weight
    assert torch.equal(clipped, compress_weight(emb.weight.detach(), 3)) and not torch.equal(clipped, full)
