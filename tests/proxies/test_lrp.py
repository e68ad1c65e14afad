"""LRP against zennit (a test peer) and relevance conservation on CNN and transformer blocks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from autocomp.proxies.lrp import relevance_per_layer


def _cnn(bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 16, bias=bias), nn.ReLU(), nn.Linear(16, 10, bias=bias)).eval()


LAYERS = ["0", "3", "7", "9"]


def _zennit_relevance(model, x, target):
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, Norm

    grads = {}

    def keep(name):
        def pre(mod, args):
            t = args[0]
            if not t.requires_grad:
                t = t.detach().requires_grad_(True)
            t.retain_grad()
            grads[name] = t
            return (t,) + tuple(args[1:])
        return pre

    mods = dict(model.named_modules())
    # Registered before zennit's hooks, so the recorded tensor is the one zennit's rule returns
    # relevance for (zennit passes relevance as the gradient).
    handles = [mods[n].register_forward_pre_hook(keep(n)) for n in LAYERS]
    # zennit's own choice for average pooling (its composites use Norm there too); max pooling,
    # ReLU and flattening pass relevance by the gradient.
    comp = LayerMapComposite([(nn.Conv2d, Epsilon(epsilon=1e-6)), (nn.Linear, Epsilon(epsilon=1e-6)),
                              (nn.AvgPool2d, Norm())])
    try:
        with comp.context(model) as m:
            out = m(x)
            onehot = torch.nn.functional.one_hot(target, out.shape[-1]).to(out.dtype)
            out.backward(gradient=onehot * out)
    finally:
        for h in handles:
            h.remove()
    return {n: t.grad.flatten(1).sum(1) for n, t in grads.items()}


def test_layer_relevance_matches_zennit_epsilon_rule(digits):
    model = _cnn(bias=True)
    x = digits.calib[0][0][:32]
    target = model(x).argmax(-1)
    ours = relevance_per_layer(model, x, LAYERS, target=target, eps=1e-6)
    theirs = _zennit_relevance(model, x, target)
    for n in LAYERS:
        torch.testing.assert_close(ours.layer_input[n], theirs[n], rtol=1e-4, atol=1e-5)
    # Biases absorb relevance, so the layers do not simply all equal the logit.
    assert not torch.allclose(ours.layer_input["0"], ours.target, rtol=1e-3)


def test_conservation_without_biases(digits):
    # Stated tolerance: in a bias-free network every layer's input relevance equals the target
    # logit to 1e-4 (relative), the epsilon stabiliser being the only leak.
    model = _cnn(bias=False, seed=1)
    x = digits.calib[0][0][:32]
    r = relevance_per_layer(model, x, LAYERS, eps=1e-9)
    for n in LAYERS:
        torch.testing.assert_close(r.layer_input[n], r.target, rtol=1e-4, atol=1e-5)


def test_conservation_through_attention_layernorm_gelu_and_residuals(digits):
    from autocomp.workloads.digits_vit import DigitsViT

    torch.manual_seed(0)
    model = DigitsViT().eval()
    with torch.no_grad():  # no bias-like terms, so relevance is conserved across every cut
        for name, p in model.named_parameters():
            if name.endswith("bias") or name == "pos":
                p.zero_()
    x = digits.calib[0][0][:16]
    cuts = ["embed", "blocks.0", "blocks.1", "norm", "head"]
    r = relevance_per_layer(model, x, cuts, eps=1e-9)
    for n in ["embed", "head"]:
        torch.testing.assert_close(r.layer_input[n], r.target, rtol=1e-3, atol=1e-4)
    for n in ["blocks.0", "blocks.1", "norm"]:
        torch.testing.assert_close(r.layer_output[n], r.target, rtol=1e-3, atol=1e-4)
    # Inside a block the residual splits relevance between the skip path and the branch.
    inner = relevance_per_layer(model, x, ["blocks.0.attn.qkv", "blocks.0.mlp.0"], eps=1e-9)
    assert inner.layer_input["blocks.0.attn.qkv"].abs().sum() > 0


def test_lrp_proxy_on_the_trained_vit():
    from autocomp.profile import profile_model
    from autocomp.proxies import get_proxy
    from autocomp.search_spaces import load_space
    from autocomp.workload import load_workload

    wl = load_workload("digits-vit")
    assert wl.evaluate(wl.model()) >= 0.95
    layers = profile_model(wl.model(), wl.sample_input())
    sens = get_proxy("lrp").score(wl, layers, load_space("mixed_precision"))
    assert set(sens.omega) == {l.name for l in layers}
    assert all(v > 0 for v in sens.layer_scores.values())
    for n, row in sens.omega.items():
        assert row["w2a8"] >= row["w8a8"] >= 0, n
