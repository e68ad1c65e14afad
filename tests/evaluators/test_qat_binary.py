"""1/1.58-bit QAT options: BitNet mean vs median steps, PB-LLM salient weights, binary activations."""
from __future__ import annotations

import torch

from autocomp.evaluators._binary import BinaryAct, FixedBinaryAct
from autocomp.evaluators._lsq import QuantWeight
from autocomp.evaluators.qat import QATOptions, _ranges, qat_train
from autocomp.modules import weight_of
from autocomp.policy import Choice
from autocomp.quant import fake_quant_act

from ._qat_util import inner, names_of, one_thread  # noqa: F401  (the fixture)


def test_ternary_mean_and_median_steps_differ_as_defined():
    torch.manual_seed(0)
    w = torch.randn(5, 40) ** 3                      # heavy tails: the mean |w| exceeds the median
    mean = QuantWeight(w, Choice(1.58, 32), ternary_scale="mean")
    med = QuantWeight(w, Choice(1.58, 32), ternary_scale="median")
    wm, sm, _ = mean.bake(w)
    wd, sd, _ = med.bake(w)
    assert torch.allclose(sm[:, 0], w.abs().mean(dim=1)) and torch.allclose(sd[:, 0], w.abs().median(dim=1).values)
    assert (sd < sm).all()
    for out, s in ((wm, sm), (wd, sd)):
        assert torch.equal(out, (w / s).round().clamp(-1, 1) * s)
    assert int((wd == 0).sum()) < int((wm == 0).sum())     # a smaller step rounds fewer weights to 0


def test_salient_weights_are_kept_at_8_bits():
    torch.manual_seed(1)
    w = torch.randn(8, 50)
    out, s, _ = QuantWeight(w, Choice(1, 32), salient=0.1).bake(w)
    top = torch.zeros(w.numel(), dtype=torch.bool)
    top[w.abs().flatten().topk(40).indices] = True
    top = top.reshape(w.shape)
    step8 = (w * top).abs().amax(dim=1, keepdim=True) / 127
    assert ((out - w).abs() <= step8 / 2 + 1e-7)[top].all()            # exact up to 8-bit rounding
    rest = torch.where(top, torch.nan, w.abs()).nanmean(dim=1)           # binary step of the others
    assert torch.allclose(s[:, 0], rest)
    assert torch.equal(out[~top], (torch.where(w >= 0, 1.0, -1.0) * s)[~top])
    plain, _, _ = QuantWeight(w, Choice(1, 32)).bake(w)
    assert (plain - w).abs()[top].mean() > 10 * (out - w).abs()[top].mean()


def test_binary_activation_starts_at_ptq_and_learns_its_threshold(digits):
    x = torch.rand(1000) * 3
    act = BinaryAct(0.0, 3.0)
    # PTQ's 1-bit input: levels 0 and 3, threshold 1.5 (off exact ties)
    assert torch.equal(act(x), fake_quant_act(x, 0.0, 3.0, 1))
    names = names_of(digits.model())
    pol = inner(names, Choice(1.58, 1))
    res = qat_train(digits.model(), pol, digits.train, digits.calib, digits.loss, QATOptions(steps=5, lr=1e-2))
    ranges = _ranges(digits.model(), names, digits.calib)
    mods = dict(res.model.named_modules())
    moved = 0
    for n in names[1:-1]:
        (hook,) = mods[n]._forward_pre_hooks.values()
        assert isinstance(hook, FixedBinaryAct)
        init = BinaryAct(*ranges[n][1])
        moved += abs(hook.threshold - float(init.threshold.detach())) > 1e-6
        seen = hook(mods[n], (torch.randn(64) * 2,))[0]
        assert len(torch.unique(seen)) <= 2                            # two levels: a binary input
    assert moved == len(names) - 2
    assert res.model(digits.eval[0][0]).shape == (len(digits.eval[0][1]), 10)
    assert all(float(weight_of(mods[n]).abs().max()) > 0 for n in names)
