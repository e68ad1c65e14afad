"""Distillation in QAT: the KL and feature terms, and the teacher left as it was."""
from __future__ import annotations

import torch

from autocomp.evaluators import get_evaluator
from autocomp.evaluators._distill import FeatureTap, feature_mse, logits_kl
from autocomp.policy import Choice

from ._qat_util import inner, names_of, one_thread  # noqa: F401  (the fixture)


def test_kl_is_zero_for_the_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    t = torch.randn(6, 10)
    assert float(logits_kl(t, t.clone(), 2.0)) == 0.0
    s = t + 0.5 * torch.randn(6, 10)
    kl = float(logits_kl(s, t, 2.0))
    p, q = torch.softmax(t / 2, -1), torch.softmax(s / 2, -1)
    assert kl > 0 and abs(kl - 4 * float((p * (p.log() - q.log())).sum(-1).mean())) < 1e-5


def test_causal_lm_logits_are_compared_per_token():
    torch.manual_seed(1)
    t, s = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    per_token = torch.stack([logits_kl(s[b, i:i + 1], t[b, i:i + 1]) for b in range(2) for i in range(5)])
    assert abs(float(logits_kl(s, t)) - float(per_token.mean())) < 1e-5


def test_feature_term_and_taps(digits):
    a = [torch.randn(4, 3), torch.randn(2, 8)]
    assert float(feature_mse(a, [x.clone() for x in a])) == 0.0
    assert float(feature_mse([x + 1 for x in a], a)) > 0
    names = names_of(digits.model())
    teacher = digits.model()
    with FeatureTap(teacher, names) as tap:
        teacher(digits.calib[0][0])
        outs = tap.take()
    assert len(outs) == len(names) and outs[-1].shape == (128, 10)
    m = get_evaluator("qat", steps=3, distill=1.0, distill_features=True, distill_temp=2.0).evaluate(
        digits, inner(names, Choice(2, 8)))
    assert 0 < m.quality <= 1
    assert not any(mod._forward_hooks for mod in teacher.modules())     # the taps are gone
