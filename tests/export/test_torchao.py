"""The torchao export: a tiny BERT's policy (int8 and int4 group-wise layers, a8 layers, and
layers torchao cannot express) mapped, quantized by real torchao, saved, loaded, and run."""
from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("torchao")

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.errors import AutocompError
from autocomp.export import export_format
from autocomp.export.torchao_export import CONFIG, WEIGHTS, export_torchao, load_torchao
from autocomp.kernels import torchao_backend
from autocomp.kernels.torchao_backend import compare_backends, torchao_plan, weight_only
from autocomp.modules import activation_layers, call_model, quantizable_layers
from autocomp.policy import Choice, Policy, apply
from autocomp.workload import load_workload, output_tensor

CYCLE = [Choice(8, 32), Choice(4, 32, group=16), Choice(8, 8), Choice(4, 8, group=16),
         Choice(4, 32, group=16, zero_point=True), Choice(8, 32, prune=0.5), Choice(4, 4)]


@pytest.fixture(scope="module")
def bert():
    wl = load_workload("autocomp.testing.hf:tiny_bert")
    model = wl.model()
    names = [n for n, _ in quantizable_layers(model)]
    policy = Policy.from_choices([(n, CYCLE[i % len(CYCLE)]) for i, n in enumerate(names)])
    ranges = activation_ranges(activation_stats(model, [n for n, _ in activation_layers(model)], wl.calib),
                               (2, 3, 4, 5, 6, 7, 8, 16))
    return wl, model, policy, ranges


def test_plan_maps_each_choice_or_says_why(bert):
    _, model, policy, _ = bert
    plan = torchao_plan(model, policy)
    by = {l.name: l for l in plan.layers}
    assert by["bert.encoder.layer.1.attention.self.query"].config == "Int8DynamicActivationInt8WeightConfig"
    assert by["bert.encoder.layer.0.attention.self.query"].config == "Int8DynamicActivationIntxWeightConfig"
    assert by["bert.encoder.layer.0.attention.self.key"].kwargs["mapping_type"] == "ASYMMETRIC"
    assert by["bert.encoder.layer.0.intermediate.dense"].config == "Int8WeightOnlyConfig"
    assert by["bert.embeddings.position_embeddings"].kwargs["granularity"] == {"PerGroup": {"group_size": 16}}
    reasons = {u.name: u.reason for u in plan.unsupported}
    assert reasons["bert.encoder.layer.0.attention.self.value"].startswith("pruning")
    assert reasons["bert.encoder.layer.0.attention.output.dense"].startswith("4-bit activations")
    # every policy layer is either configured, float, or listed: none silently changed
    assert [l.name for l in plan.layers] == [n for n, _ in policy.layers]
    assert all(by[u.name].config is None and by[u.name].note.startswith("kept float") for u in plan.unsupported)


def test_round_trip_matches_simulation(bert, tmp_path):
    wl, model, policy, _ = bert
    doc = export_torchao(model, policy, tmp_path, apply=True)
    on_disk = json.loads((tmp_path / CONFIG).read_text())
    assert on_disk["unsupported"] == doc["unsupported"] and len(on_disk["unsupported"]) == 4
    assert set(on_disk["fqn_to_config"]) == {l["name"] for l in on_disk["layers"] if l["config"]}
    from torchao.core.config import config_from_dict
    cfg = config_from_dict(on_disk["fqn_to_config"]["bert.embeddings.position_embeddings"])
    assert type(cfg).__name__ == "IntxWeightOnlyConfig" and cfg.weight_dtype == torch.int4

    assert b"\x80\x04" not in (tmp_path / WEIGHTS).read_bytes()[:64]      # safetensors, not a pickle
    loaded = load_torchao(tmp_path, copy.deepcopy(model))
    kinds = {n: type(p).__name__ for n, p in loaded.named_parameters()}
    assert kinds["bert.encoder.layer.1.attention.self.query.weight"] == "Int8Tensor"
    assert kinds["bert.embeddings.position_embeddings.weight"] == "IntxUnpackedToInt8Tensor"
    assert kinds["bert.encoder.layer.0.attention.self.value.weight"] == "Parameter"   # kept float

    # against the simulation with the same layers float and no activation quantization, torchao's
    # int4/int8 weight-only numerics are autocomp's up to its scale rounding
    plan = torchao_plan(model, policy)
    keep = {u.name for u in plan.unsupported}
    wo = Policy.from_choices([(n, c if n not in keep else Choice(32, 32)) for n, c in weight_only(policy).layers])
    x = wl.sample_input()
    with torch.no_grad():
        ref = output_tensor(call_model(apply(model, wo), x))
        y = output_tensor(call_model(loaded, x))
    assert float((y - ref).abs().max() / ref.abs().max()) < 0.05
    assert bool((y.argmax(-1) == ref.argmax(-1)).all())


def test_compare_backends_reports_three_runs(bert):
    wl, model, policy, ranges = bert
    cmp = compare_backends(model, policy, ranges, wl.sample_input(), "cpu", repeats=2)
    assert [r.backend for r in cmp.runs] == ["fp32", "autocomp", "torchao"]
    assert cmp.run("autocomp").max_rel_err < 1e-4          # autocomp's kernels are the simulation
    assert 0 < cmp.run("torchao").max_rel_err < 0.2
    assert all(r.latency > 0 and 0 <= r.top1_agreement <= 1 for r in cmp.runs)
    assert cmp.store_fields()["torchao_unsupported_layers"] == 4


def test_compare_backends_runs_the_study_quantizers_weights(bert):
    """Under gptq both backends start from gptq's weights: torchao is nearer gptq's simulation
    than torchao started from rtn's weights is, and autocomp's kernels are that simulation."""
    from autocomp.kernels.torchao_backend import output_errors, torchao_model
    from autocomp.quantizers import collect_stats, get_quantizer

    wl, model, policy, ranges = bert
    q = get_quantizer("gptq")
    names = [n for n, _ in activation_layers(model)]
    stats = collect_stats(model, wl.calib, names, q.needs)
    results: dict = {}
    sim = q.apply(model, policy, ranges, stats, batches=wl.calib, results=results)
    x = wl.sample_input()
    cmp = compare_backends(model, policy, ranges, x, "cpu", repeats=2, sim=sim, results=results)
    assert [r.backend for r in cmp.runs] == ["fp32", "autocomp", "torchao"]
    assert cmp.run("autocomp").max_rel_err < 1e-4
    from_rtn = torchao_model(apply(model, weight_only(policy)), torchao_plan(model, policy), model)
    with torch.no_grad():
        ref = output_tensor(call_model(sim.eval(), x))
        rtn_err = output_errors(output_tensor(call_model(from_rtn, x)), ref)[1]
    assert cmp.run("torchao").max_rel_err < rtn_err


def test_nothing_expressible_is_refused(bert, tmp_path):
    _, model, policy, _ = bert
    pruned = Policy.from_choices([(n, Choice(8, 32, prune=0.5)) for n, _ in policy.layers])
    with pytest.raises(AutocompError, match="torchao cannot express any layer"):
        export_torchao(model, pruned, tmp_path)
    assert not (tmp_path / CONFIG).exists()


def test_missing_torchao_is_one_line(without_package):
    without_package("torchao")
    with pytest.raises(AutocompError, match=r"torchao is not installed: pip install 'autocomp\[torchao\]'"):
        torchao_backend.require_torchao()


def test_registered_as_export_format():
    fmt = export_format("torchao")
    assert fmt.directory and fmt.needs_model and "torchao" in fmt.requires


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory, digits, digits_layers):
    from autocomp.budget import CostModel
    from autocomp.evaluators import get_evaluator
    from autocomp.profile import model_param_count
    from autocomp.store import Store

    url = f"sqlite:///{tmp_path_factory.mktemp('validate') / 'v.db'}"
    store = Store(url)
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    st, _ = store.open_study("ao", {"model": "digits", "space": "mixed_precision"})
    store.save_layers(st, digits_layers)
    names = [l.name for l in digits_layers]
    mixed = Policy.from_choices([(n, Choice(8, 8) if n.startswith("features") else Choice(4, 32, group=16))
                                 for n in names])
    ptq = get_evaluator("ptq")
    for pol, label in ((mixed, "mixed"), (Policy.uniform(names, Choice(8, 32, prune=0.5)), "pruned")):
        costs = cm.costs(pol)
        store.save_policy(st, pol, "ilp", label, costs)
        store.save_evaluation(st, ptq.evaluate(digits, pol).with_costs(costs))
    return url, store, mixed, Policy.uniform(names, Choice(8, 32, prune=0.5))


def test_validate_backend_torchao_one_table(digits_study):
    from typer.testing import CliRunner

    from autocomp.cli import app

    url, store, mixed, pruned = digits_study
    res = CliRunner().invoke(app, ["validate", "ao", "--db", url, "--device", "cpu", "--repeats", "2",
                                   "--backend", "torchao", "-p", mixed.id, "-p", pruned.id],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    import re

    text = re.sub(r"[\s│┃]+", " ", res.output)            # table cells wrap over lines
    assert "autocomp and torchao kernels against the simulation" in text
    assert "torchao cannot express any layer of this policy" in text        # the all-pruned one
    assert "layers torchao cannot express" in text and "Conv2d: torchao" in text
    ev = {e.policy_id: e.extra for e in store.list_evaluations(store.get_study("ao"))}
    got = ev[mixed.id]
    # digits' convolutions are not torchao's; its three linear layers are
    assert got["torchao_unsupported_layers"] == sum(1 for n, _ in mixed.layers if n.startswith("features"))
    assert 0 < got["torchao_max_rel_err"] < 0.2 and got["torchao_latency_ms"] > 0
    assert 0 <= got["torchao_top1_agreement"] <= 1
    assert "torchao_latency_ms" not in ev[pruned.id]


def test_validate_unknown_backend_is_one_line(digits_study):
    from typer.testing import CliRunner

    from autocomp.cli import app

    res = CliRunner().invoke(app, ["validate", "ao", "--db", digits_study[0], "--backend", "tvm"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["error: unknown --backend 'tvm': use autocomp or torchao"]


def test_front_export_torchao_and_onnx_from_a_study(digits_study, tmp_path):
    from typer.testing import CliRunner

    from autocomp.cli import app

    url, _, mixed, _ = digits_study
    run = CliRunner()
    res = run.invoke(app, ["front", "export", "ao", mixed.id, "--format", "torchao", "--apply",
                           "-o", str(tmp_path / "ao"), "--db", url])
    assert res.exit_code == 0, res.output
    assert "layer(s) torchao cannot express (kept float)" in res.output and "Conv2d" in res.output
    assert f"wrote torchao configs for 3 of {len(mixed)} layers" in res.output
    doc = json.loads((tmp_path / "ao" / CONFIG).read_text())
    assert doc["policy_id"] == mixed.id and doc["bytes"] == (tmp_path / "ao" / WEIGHTS).stat().st_size

    res = run.invoke(app, ["front", "export", "ao", mixed.id, "--format", "onnx", "-o", str(tmp_path / "onnx"),
                           "--db", url])
    assert res.exit_code == 0, res.output
    assert "max rel err" in res.output and (tmp_path / "onnx" / "model.onnx").is_file()
    rep = json.loads((tmp_path / "onnx" / "onnx_report.json").read_text())
    assert rep["check"]["ok"]

    res = run.invoke(app, ["front", "export", "ao", mixed.id, "--format", "checkpoint", "--apply",
                           "-o", str(tmp_path / "ck"), "--db", url])
    assert res.exit_code == 2 and "--apply is for --format torchao" in res.output
    assert not (tmp_path / "ck").exists()


def test_tied_embedding_and_head_are_saved_once_and_load_tied(tmp_path):
    """GPT-2's ``wte`` and ``lm_head`` share one weight: ``--apply`` stores it once (safetensors
    refuses shared memory) and the loaded model has them tied again."""
    wl = load_workload("autocomp.testing.hf:tiny_gpt2")
    model = wl.model()
    names = [n for n, _ in quantizable_layers(model)]
    policy = Policy.from_choices([(n, Choice(8, 32) if "wte" in n else Choice(4, 32, group=16)) for n in names])
    doc = export_torchao(model, policy, tmp_path, apply=True)
    assert doc["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    loaded = load_torchao(tmp_path, copy.deepcopy(model))
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    x = wl.sample_input()
    with torch.no_grad():
        assert torch.isfinite(output_tensor(call_model(loaded, x))).all()
