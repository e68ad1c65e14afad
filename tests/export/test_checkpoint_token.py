"""A checkpoint of per-token (dynamic) activation choices: strict JSON, and the same outputs."""
from __future__ import annotations

import json

import pytest
import torch

import autocomp
from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.export import ExportJob
from autocomp.export.checkpoint import MANIFEST, write_checkpoint
from autocomp.modules import activation_layers, call_model, quantizable_layers
from autocomp.policy import Choice, Policy
from autocomp.quantizers import get_quantizer
from autocomp.workload import load_workload, output_tensor


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_per_token_layers_round_trip(tmp_path):
    wl = load_workload("autocomp.testing.hf:tiny_bert")
    model = wl.model()
    ranges = activation_ranges(activation_stats(model, [n for n, _ in activation_layers(model)], wl.calib), (8,))
    names = [n for n, m in quantizable_layers(model)]
    # block linears per token at 8 bits, the rest weight-only
    pol = Policy.from_choices([(n, Choice(8, 8, act="token") if ".layer." in n else Choice(8, 32)) for n in names])
    assert any(c.per_token for _, c in pol.layers)
    q = get_quantizer("rtn")
    job = ExportJob("t", pol, pol.to_dict(), model=model, act_ranges=ranges, quantizer=q, stats={}, workload=wl)
    out = tmp_path / "ck"
    out.mkdir()
    write_checkpoint(job, out)
    man = _strict((out / MANIFEST).read_text())
    token = [l for l in man["layers"] if l["act_range"] == "token"]
    assert len(token) == sum(c.per_token for _, c in pol.layers)
    loaded = autocomp.load_compressed(out, wl.model)
    sim = q.apply(model, pol, ranges, {})
    x = wl.sample_input()
    with torch.no_grad():
        a, b = output_tensor(call_model(loaded, x)), output_tensor(call_model(sim, x))
    # the same dynamic quantization on both sides; the scales differ by their fp16 rounding
    assert float((a - b).abs().max() / b.abs().max()) < 2e-2


def _job(wl, model, pol, spec):
    from autocomp.evaluators.ptq import build_quantizer
    from autocomp.quantizers import collect_stats

    names = [n for n, _ in activation_layers(model)]
    ranges = activation_ranges(activation_stats(model, names, wl.calib), (8,))
    q = build_quantizer(spec)
    return ExportJob("t", pol, pol.to_dict(), model=model, act_ranges=ranges, quantizer=q,
                     stats=collect_stats(model, wl.calib, names, q.needs), workload=wl)


def test_groupwise_gptq_weights_export_and_load(tmp_path):
    """GPTQ's group-wise weights are not rtn's codes of anything: their grid is read off them."""
    wl = load_workload("autocomp.testing.hf:tiny_bert")
    model = wl.model()
    names = [n for n, _ in quantizable_layers(model)]
    pol = Policy.from_choices([(n, Choice(4, 32, group=16) if ".layer." in n else Choice(8, 32)) for n in names])
    job = _job(wl, model, pol, "gptq")
    out = tmp_path / "ck"
    out.mkdir()
    write_checkpoint(job, out)
    loaded = autocomp.load_compressed(out, wl.model)
    sim = job.quantizer.apply(model, pol, job.act_ranges, job.stats, batches=wl.calib)
    x = wl.sample_input()
    with torch.no_grad():
        a, b = output_tensor(call_model(loaded, x)), output_tensor(call_model(sim, x))
    assert float((a - b).abs().max() / b.abs().max()) < 1e-2


def test_awq_input_scales_are_refused_in_one_line(tmp_path):
    from autocomp.errors import AutocompError

    wl = load_workload("autocomp.testing.hf:tiny_bert")
    model = wl.model()
    names = [n for n, _ in quantizable_layers(model)]
    pol = Policy.from_choices([(n, Choice(4, 32, group=16) if ".layer." in n else Choice(8, 32)) for n in names])
    out = tmp_path / "ck"
    out.mkdir()
    with pytest.raises(AutocompError, match="awq scales its input") as e:   # 14 of its 17 layers here
        write_checkpoint(_job(wl, model, pol, "awq"), out)
    assert "\n" not in str(e.value) and not any(out.iterdir())   # refused before a file was written


def test_pruned_float_layers_keep_the_quantizer_s_mask(tmp_path):
    """Layer-wise pruning (float weights) under gptq: SparseGPT picks its own mask and updates the
    kept weights; the checkpoint stores exactly those values and positions."""
    from autocomp.modules import weight_of

    wl = load_workload("autocomp.testing.hf:tiny_bert")
    model = wl.model()
    names = [n for n, _ in quantizable_layers(model)]
    pol = Policy.from_choices([(n, Choice(32, 32, prune=0.5) if ".layer." in n else Choice(32, 32)) for n in names])
    job = _job(wl, model, pol, "gptq")
    out = tmp_path / "ck"
    out.mkdir()
    write_checkpoint(job, out)
    man = json.loads((out / MANIFEST).read_text())
    assert {l["codes"] for l in man["layers"] if l.get("pruning")} == {"float32"}
    loaded = autocomp.load_compressed(out, wl.model)
    sim = job.quantizer.apply(model, pol, job.act_ranges, job.stats, batches=wl.calib)
    lmods, smods = dict(loaded.named_modules()), dict(sim.named_modules())
    pruned = [n for n, c in pol.layers if c.prune]
    assert pruned and all(torch.equal(weight_of(lmods[n]), weight_of(smods[n])) for n in pruned)
