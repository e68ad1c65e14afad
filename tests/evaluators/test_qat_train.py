"""The qat evaluator's training: its split, its steps, its options, and that training beats PTQ."""
from __future__ import annotations

import dataclasses
import logging

import pytest

from autocomp.errors import AutocompError
from autocomp.evaluators import get_evaluator
from autocomp.evaluators.qat import _SAID
from autocomp.policy import Choice
from autocomp.testing import EvaluatorContract

from ._qat_util import inner, names_of, one_thread  # noqa: F401  (the fixture)


class TestQATWithNewOptions(EvaluatorContract):
    """The evaluator contract with every training option of issue 14 switched on."""

    evaluator = "qat"
    options = {"steps": 4, "estimator": "reste", "reste_power": 2.0, "learn_scales": True, "distill": 0.5,
               "distill_temp": 2.0, "ternary_scale": "median", "salient": 0.02}
    exact_at_fp32 = False
    bad_options = [({"steps": -1}, "steps"), ({"steps": 2.5}, "steps"), ({"estimator": "sgd"}, "estimator"),
                   ({"reste_power": 0.5}, "reste_power"), ({"reste_clamp": 0}, "reste_clamp"),
                   ({"biper_freq": -1.0}, "biper_freq"), ({"learn_scales": "yes"}, "learn_scales"),
                   ({"distill": -0.1}, "distill"), ({"distill_temp": 0}, "distill_temp"),
                   ({"distill_features": True}, "distill_features"), ({"ternary_scale": "max"}, "ternary_scale"),
                   ({"salient": 1.0}, "salient"), ({"salient": "a"}, "salient")]


def _recording(loss, sizes):
    def rec(out, y):
        sizes.append(int(y.shape[0]))
        return loss(out, y)
    return rec


def test_trains_on_the_train_split_when_there_is_one(digits):
    pol = inner(names_of(digits.model()), Choice(4, 8))
    sizes: list[int] = []
    wl = dataclasses.replace(digits, loss=_recording(digits.loss, sizes))
    m = get_evaluator("qat", steps=9).evaluate(wl, pol)
    assert m.extras["train_split"] == "train" and m.extras["steps"] == 9
    train = [len(b[1]) for b in digits.train]
    assert sizes == (train * 2)[:9] and 835 % 128 in sizes       # cycled over the train batches
    sizes.clear()
    assert get_evaluator("qat", epochs=1).evaluate(wl, pol).extras["steps"] == len(digits.train)


def test_without_a_train_split_it_trains_on_calib_and_says_so_once(digits, caplog):
    pol = inner(names_of(digits.model()), Choice(4, 8))
    sizes: list[int] = []
    wl = dataclasses.replace(digits, name="digits-no-train", train=None, loss=_recording(digits.loss, sizes))
    _SAID.discard(wl.name)
    with caplog.at_level(logging.WARNING, logger="autocomp.qat"):
        ev = get_evaluator("qat", steps=2)
        assert ev.evaluate(wl, pol).extras["train_split"] == "calib"
        ev.evaluate(wl, pol)
    said = [r for r in caplog.records if "no training split" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0].getMessage()
    assert sizes == [128, 128] * 2


def test_bad_options_name_the_option():
    with pytest.raises(AutocompError, match="evaluator 'qat': estimator must be one of ste, reste, biper"):
        get_evaluator("qat", estimator="adam")


@pytest.mark.parametrize("options", [{}, {"learn_scales": True}])
def test_qat_at_2_bits_beats_ptq(digits, options):
    pol = inner(names_of(digits.model()), Choice(2, 8))
    ptq = get_evaluator("ptq").evaluate(digits, pol).quality
    qat = get_evaluator("qat", steps=10, seed=0, **options).evaluate(digits, pol).quality
    assert qat > ptq, (qat, ptq)
