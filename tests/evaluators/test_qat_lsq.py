"""Learned scales (LSQ) in QAT: gradients reach them, they move, and the scored model uses them."""
from __future__ import annotations

import pytest
import torch

from autocomp.evaluators import get_evaluator
from autocomp.evaluators._binary import expand
from autocomp.evaluators._lsq import QuantWeight, weight_grid
from autocomp.evaluators.qat import QATOptions, qat_train
from autocomp.modules import weight_of
from autocomp.policy import Choice
from autocomp.quant import compress_weight, prune_mask, quantize_weight_groups

from ._qat_util import inner, names_of, one_thread  # noqa: F401  (the fixture)


def test_steps_get_gradients_and_start_at_rtn():
    torch.manual_seed(0)
    w = torch.randn(6, 20)
    qw = QuantWeight(w, Choice(3, 32, group=8), learn=True)
    init = quantize_weight_groups(w, 3, 8).scales
    assert qw.scale.shape == (6, 3) and torch.allclose(qw.scale, init)
    assert torch.allclose(qw(w), compress_weight(w, 3, group=8), atol=1e-6)   # starts from the PTQ weight
    ((qw(w) - 0.3 * w) ** 2).sum().backward()
    assert qw.scale.grad is not None and qw.scale.grad.abs().sum() > 0


def _codes_ok(w: torch.Tensor, s: torch.Tensor, choice: Choice) -> bool:
    grid = weight_grid(choice)
    flat = w.reshape(w.shape[0], -1)
    codes = flat / expand(s, flat.shape[1], choice.group)
    return bool((codes - codes.round()).abs().max() < 1e-3 and codes.round().min() >= grid.qmin
                and codes.round().max() <= grid.qmax)


def test_learned_scales_move_and_are_what_the_model_is_scored_with(digits):
    names = names_of(digits.model())
    choice = Choice(2, 8)
    pol = inner(names, choice)
    res = qat_train(digits.model(), pol, digits.train, digits.calib, digits.loss,
                    QATOptions(steps=6, learn_scales=True, lr=2e-3))
    mods = dict(res.model.named_modules())
    moved = 0
    for name in names[1:-1]:
        s, _ = res.scales[name]
        w = weight_of(mods[name]).detach()
        init = quantize_weight_groups(weight_of(dict(digits.model().named_modules())[name]).detach(), 2).scales
        moved += int(not torch.allclose(s, init))
        # the weights lie on the learned grid: one step per channel, codes in range
        assert s.shape == (w.shape[0], 1) and _codes_ok(w, s, choice)
    assert moved == len(names) - 2
    frozen = qat_train(digits.model(), pol, digits.train, digits.calib, digits.loss, QATOptions(steps=6, lr=2e-3))
    fw = dict(frozen.model.named_modules())
    assert any(not torch.equal(weight_of(mods[n]), weight_of(fw[n])) for n in names[1:-1])
    ev = get_evaluator("qat", steps=6, learn_scales=True, lr=2e-3)
    assert ev.evaluate(digits, pol).quality == digits.evaluate(res.model)


def test_groups_and_pruning_masks_stay_in_format(digits):
    names = names_of(digits.model())
    choice = Choice(3, 8, prune=0.5, group=16)
    res = qat_train(digits.model(), inner(names, choice), digits.train, digits.calib, digits.loss,
                    QATOptions(steps=4, learn_scales=True, estimator="reste"))
    floats = dict(digits.model().named_modules())
    for name in names[1:-1]:
        w = weight_of(dict(res.model.named_modules())[name]).detach()
        s, _ = res.scales[name]
        k = w.reshape(w.shape[0], -1).shape[1]
        assert s.shape == (w.shape[0], -(-k // 16)) and _codes_ok(w, s, choice)
        keep = prune_mask(weight_of(floats[name]).detach(), 0.5)        # from the float weight, fixed
        assert torch.equal(w[~keep], torch.zeros_like(w[~keep]))


@pytest.mark.parametrize("estimator", ["ste", "biper"])
def test_learned_activation_steps_are_scored(digits, estimator):
    names = names_of(digits.model())
    res = qat_train(digits.model(), inner(names, Choice(4, 4)), digits.train, digits.calib, digits.loss,
                    QATOptions(steps=6, learn_scales=True, estimator=estimator, lr=5e-3))
    from autocomp.policy import ActFakeQuant
    from autocomp.quant import act_qparams

    hooks = [h for n in names[1:-1] for h in dict(res.model.named_modules())[n]._forward_pre_hooks.values()]
    assert len(hooks) == len(names) - 2 and all(isinstance(h, ActFakeQuant) and h.bits == 4 for h in hooks)
    from autocomp.evaluators.qat import _ranges
    calib = _ranges(digits.model(), names, digits.calib)
    steps = [act_qparams(h.lo, h.hi, 4)[0] for h in hooks]
    init = [act_qparams(*calib[n][4], 4)[0] for n in names[1:-1]]
    assert any(abs(a - b) > 1e-6 * max(b, 1e-9) for a, b in zip(steps, init))   # the learned steps, not PTQ's
