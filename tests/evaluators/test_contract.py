"""The evaluator contract (:mod:`autocomp.testing.evaluators`) on ``ptq``, ``qat`` and a user's
evaluator loaded by path (``tests/evaluators/_toy.py``); then the one-line errors of unknown
evaluators and quality metrics."""
from __future__ import annotations

from pathlib import Path

import pytest

from autocomp.errors import AutocompError
from autocomp.evaluators import get_evaluator, list_evaluators
from autocomp.metrics import get_quality_metric
from autocomp.policy import Choice, Policy
from autocomp.testing import EvaluatorContract

TOY = f"{Path(__file__).with_name('_toy.py')}:WeightOnly"


class TestPTQ(EvaluatorContract):
    evaluator = "ptq"
    bad_options = [({"act_bits": ()}, "act_bits"), ({"act_bits": (8, 40)}, "act_bits"),
                   ({"act_bits": ("8",)}, "act_bits"), ({"quantizer": "nope"}, "quantizer"),
                   ({"quantizer": "rtn+"}, "quantizer")]

    def test_harsh_policies_lose_quality_on_digits(self, scored, workload):
        qm = get_quality_metric(workload.quality)
        assert qm.better(scored["mixed"][1].quality, scored["harsh"][1].quality)   # 2-bit PTQ collapses


class TestQAT(EvaluatorContract):
    evaluator = "qat"
    options = {"epochs": 1}
    exact_at_fp32 = False
    bad_options = [({"epochs": -1}, "epochs"), ({"epochs": 1.5}, "epochs"), ({"lr": 0}, "lr"),
                   ({"lr": float("nan")}, "lr"), ({"seed": "a"}, "seed")]

    def test_no_epochs_is_the_float_model_at_fp32(self, workload, names):
        m = get_evaluator("qat", epochs=0).evaluate(workload, Policy.uniform(names, Choice(32, 32, 0.0)))
        assert m.quality == pytest.approx(workload.evaluate(workload.model()), rel=1e-9, abs=1e-12)
        assert m.extras["epochs"] == 0


class TestUserEvaluator(EvaluatorContract):
    """A user's evaluator (tests/evaluators/_toy.py) runs the same suite."""

    evaluator = TOY
    bad_options = [({"fail_on_prune": "yes"}, "fail_on_prune")]

    def test_its_module_registered_it(self):
        get_evaluator(TOY)
        assert "weight_only_toy" in list_evaluators()
        assert type(get_evaluator("weight_only_toy")) is type(get_evaluator(TOY))


def test_unknown_evaluators_are_one_line_errors(tmp_path):
    for name, match in [("nope", "unknown evaluator 'nope': choose from .*ptq, qat"),
                        ("no_such_module_xyz:Thing", "cannot import 'no_such_module_xyz'"),
                        (f"{tmp_path / 'missing.py'}:Thing", "no such file"),
                        ("autocomp.metrics:Metrics", "has no Evaluator subclass 'Metrics'")]:
        with pytest.raises(AutocompError, match=match) as e:
            get_evaluator(name)
        assert "\n" not in str(e.value)


def test_a_workload_names_a_known_quality_metric(tmp_path):
    from autocomp.workload import load_workload

    f = tmp_path / "wl.py"
    f.write_text("from autocomp.workloads.digits import digits\n"
                 "def make(quality):\n    wl = digits()\n    wl.quality = quality\n    return wl\n"
                 "def bleu():\n    return make('bleu')\n"
                 "def ppl():\n    return make('perplexity')\n")
    assert load_workload(f"{f}:ppl").quality == "perplexity"
    with pytest.raises(AutocompError, match="unknown quality metric 'bleu': choose from accuracy") as e:
        load_workload(f"{f}:bleu")
    assert "\n" not in str(e.value)
