"""The ``nas`` evaluator: fake-quantized training with a straight-through gradient, PTQ scoring."""
from __future__ import annotations

import pytest
import torch

from autocomp.arch import Architecture
from autocomp.errors import AutocompError
from autocomp.evaluators import get_evaluator
from autocomp.evaluators.nas import _STEFakeQuant
from autocomp.nas_models import build, candidate_policy, profile_candidate
from autocomp.policy import Choice, Policy
from autocomp.quant import compress_weight
from autocomp.search_spaces import load_space

ARCH = Architecture.make("digits-cnn", {"stem": 8}, [{"op": "conv", "kernel": 3, "width": 0.5},
                                                    {"op": "dwsep", "kernel": 3, "width": 0.5}])


def test_the_weight_seen_is_the_ptq_weight_and_the_gradient_passes_straight_through():
    w = torch.randn(6, 5, requires_grad=True)
    fq = _STEFakeQuant(Choice(2, 8))
    out = fq(w)
    assert torch.equal(out.detach(), compress_weight(w.detach(), 2))
    assert len(torch.unique(out.detach()[0])) <= 4                     # 2-bit codes per row
    (out * torch.arange(30.0).reshape(6, 5)).sum().backward()
    assert torch.equal(w.grad, torch.arange(30.0).reshape(6, 5))


def test_bad_options_are_one_line():
    for opts, match in [({"steps": 0}, "steps must be a positive integer"), ({"lr": -1}, "lr must be a positive"),
                        ({"report_every": -2}, "report_every"), ({"quantizer": "nope"}, "nope")]:
        with pytest.raises(AutocompError, match=match):
            get_evaluator("nas", **opts)


def test_trains_reports_and_scores_the_candidate_deterministically(digits):
    _, layers = profile_candidate(ARCH)
    pol = candidate_policy(ARCH, layers, [4, 4], load_space("nas_digits"))
    ev = get_evaluator("nas", steps=30, report_every=10, seed=0)
    seen = []
    res = ev.run(digits, pol, lambda step, q: seen.append((step, q)))
    assert res.policy_id == pol.id and res.quality_metric == "accuracy" and res.extras["steps"] == 30
    assert [s for s, _ in seen] == [10, 20, 30] and all(0 <= q <= 1 for _, q in seen)
    untrained = digits.evaluate(build(ARCH, 0).eval())
    assert res.quality > untrained + 0.2     # 30 steps from scratch under 4-bit weights already learn
    trained = ev.train(digits, pol)
    assert not any("parametrizations" in n for n, _ in trained.named_parameters())   # plain float weights left
    again = get_evaluator("nas", steps=30, seed=0).evaluate(digits, pol)
    assert again.quality == res.quality                                            # same seed, same candidate
    with pytest.raises(AutocompError, match="has no architecture"):
        ev.evaluate(digits, Policy.from_choices(pol.layers))


def _training_inputs(digits, pol, **opts) -> list[tuple[str, int, int]]:
    """(layer type, distinct values, a_bits) of every input a quantized layer sees in training."""
    seen = []

    def tap(module, args, out):
        if module.training and isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            seen.append((type(module).__name__, int(torch.unique(args[0].detach()).numel())))

    handle = torch.nn.modules.module.register_module_forward_hook(tap)   # sees the inputs after pre-hooks
    try:
        get_evaluator("nas", steps=4, seed=0, **opts).train(digits, pol)
    finally:
        handle.remove()
    return seen


def test_activation_noise_quantizes_each_quantized_layers_training_inputs(digits):
    _, layers = profile_candidate(ARCH)
    pol = candidate_policy(ARCH, layers, [4, 4], load_space("nas_digits"))
    bits = {int(c.a_bits) for _, c in pol.layers}
    assert bits == {8}
    noisy = _training_inputs(digits, pol)
    assert len(noisy) == 4 * len(pol.layers)                            # every layer, every step
    assert all(n <= 2 ** 8 for _, n in noisy)                           # on the a_bits grid
    plain = _training_inputs(digits, pol, act_noise=False)
    assert max(n for _, n in plain) > 2 ** 8                            # without it, float inputs
    pol4 = Policy.from_choices([(n, Choice(4, 4)) for n, _ in pol.layers], arch=ARCH)
    assert all(n <= 2 ** 4 for _, n in _training_inputs(digits, pol4))   # at each layer's own a_bits
    with pytest.raises(AutocompError, match="act_momentum"):
        get_evaluator("nas", act_momentum=1.0)
