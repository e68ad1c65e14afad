"""`autocomp validate` under the study's quantizer: the kernels run the codes of the weights the
quantizer simulated (gptq, awq), not rtn's codes of the float weights."""
from __future__ import annotations

import pytest
import torch

from autocomp.budget import CostModel
from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.kernels.from_quantizer import convert_quantized, recover_qparams
from autocomp.kernels.modules import convert, weight_qparams
from autocomp.kernels.validate import ACT_BITS
from autocomp.modules import activation_layers, call_model
from autocomp.policy import Choice, Policy, apply
from autocomp.profile import model_param_count
from autocomp.quantizers import collect_stats, get_quantizer
from autocomp.stages.validate import validate_study
from autocomp.store import Store


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def calibrated(digits):
    model = digits.model().eval()
    names = [n for n, _ in activation_layers(model)]
    ranges = activation_ranges(activation_stats(model, names, digits.calib), ACT_BITS)
    stats = collect_stats(model, digits.calib, names, {"hessian", "absmean", "mean"})
    return model, ranges, stats


def _outputs(model, x):
    with torch.no_grad():
        return call_model(model, x).float()


@pytest.mark.parametrize("spec, choice", [("gptq", Choice(3, 32)), ("gptq", Choice(4, 8, group=16)),
                                          ("awq", Choice(3, 32, group=16)), ("gptq+bias_correction", Choice(3, 32))])
def test_kernels_run_the_quantizers_weights(digits, digits_layers, calibrated, spec, choice):
    model, ranges, stats = calibrated
    pol = Policy.uniform([l.name for l in digits_layers], choice)
    q = get_quantizer(spec)
    results: dict = {}
    sim = q.apply(model, pol, ranges, stats, batches=digits.calib, results=results).eval()
    kmodel = convert_quantized(model, sim, pol, ranges, results).eval()
    x = digits.sample_input()
    y_sim, y_kernel = _outputs(sim, x), _outputs(kmodel, x)
    y_rtn_kernel = _outputs(convert(model, pol, ranges).eval(), x)
    assert _rel(y_kernel, y_sim) < 1e-4, spec
    # rtn's kernels are off the quantizer's simulation by far more than float noise
    assert _rel(y_rtn_kernel, y_sim) > 100 * _rel(y_kernel, y_sim) and _rel(y_rtn_kernel, y_sim) > 1e-3
    if spec == "awq":
        assert any(getattr(r, "input_scale", None) is not None for r in results.values())
        assert any(getattr(m, "input_scale", None) is not None for m in kmodel.modules())


def test_rtn_weights_keep_converts_codes(digits, digits_layers, calibrated):
    model, ranges, _ = calibrated
    pol = Policy.uniform([l.name for l in digits_layers], Choice(4, 8))
    a = convert(model, pol, ranges)
    b = convert_quantized(model, apply(model, pol, ranges), pol, ranges)
    qa = {n: m for n, m in a.named_modules() if hasattr(m, "packed")}
    qb = {n: m for n, m in b.named_modules() if hasattr(m, "packed")}
    assert qa.keys() == qb.keys() and qa
    for n in qa:
        assert torch.equal(qa[n].packed, qb[n].packed) and torch.equal(qa[n].scale, qb[n].scale), n


@pytest.mark.parametrize("choice", [Choice(3, 32), Choice(4, 32, group=8), Choice(4, 32, group=8, zero_point=True),
                                    Choice(2, 32, zero_point=True), Choice(1.58, 32), Choice(8, 32, group=5)])
def test_recover_reads_any_grid_back(choice):
    torch.manual_seed(3)
    w = torch.randn(12, 21)
    codes, scale, zeros = weight_qparams(w, choice)
    # a different grid than rtn's: every scale stretched, codes as they are
    scale = scale * (1.0 + torch.rand_like(scale))
    k = codes.shape[1]
    expand = (lambda t: t[:, None]) if choice.group is None else \
        (lambda t: t.t().repeat_interleave(choice.group, dim=1)[:, :k])
    target = (codes.float() - (expand(zeros) if zeros is not None else 0)) * expand(scale)
    c2, s2, z2 = recover_qparams(target, choice)
    back = (c2.float() - (expand(z2) if z2 is not None else 0)) * expand(s2)
    assert float((back - target).abs().max()) <= 1e-5 * float(target.abs().max())
    off = target.clone()
    off[2, 3] += 0.37 * float(target.abs().max())
    with pytest.raises(ValueError, match="grid"):
        recover_qparams(off, choice)


def test_validate_study_under_gptq_matches_its_simulation(tmp_path, digits, digits_layers, calibrated):
    model, ranges, stats = calibrated
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = Store(url)
    study, _ = store.open_study("g", {"model": "digits", "budget_text": "size<=25%", "quantizer": "gptq"})
    store.save_layers(study, digits_layers)
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    store.update_config(study, fp32={m: cm.fp32(m) for m in ("size", "bitops", "avg_bits")}, front_costs=["size"])
    from autocomp.evaluators import get_evaluator

    ev = get_evaluator("ptq", quantizer="gptq")
    ev.setup(digits)
    pol = Policy.uniform([l.name for l in digits_layers], Choice(3, 32))
    store.save_policy(study, pol, "uniform", "uniform", cm.costs(pol))
    gptq_quality = ev.evaluate(digits, pol).with_costs(cm.costs(pol))
    store.save_evaluation(study, gptq_quality)
    reports = validate_study(store, "g", device="cpu", repeats=2)
    assert len(reports) == 1 and reports[0].ok, reports[0].to_dict()
    e = store.list_evaluations(store.get_study("g"))[0]
    assert e.extra["kernel_quantizer"] == "gptq" and e.extra["kernel_max_rel_err"] <= 1e-5
    # the kernel model scores what the gptq evaluation stored, not what rtn's weights score
    rtn_kernel = float(digits.metric(convert(model, pol, ranges).eval(), digits.eval))
    assert e.extra["kernel_accuracy"] == pytest.approx(gptq_quality.quality, abs=1e-9)
    assert rtn_kernel != pytest.approx(gptq_quality.quality, abs=1e-9)
