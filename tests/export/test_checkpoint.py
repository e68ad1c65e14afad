"""``front export --format checkpoint`` and ``autocomp.load_compressed``: real searches (real Ray,
SQLite, HiGHS), real trained models, the kernel modules; export, load, compare with the simulation.

The simulation is what the study evaluated (the study's quantizer applied to the float model).
The checkpoint stores scales in fp16, so each loaded weight may differ from the simulated one by
at most 2**-11 of itself (half an fp16 ulp); the layers' kernels add their own bounds
(:data:`autocomp.kernels.validate.BOUNDS`, fp16's 1e-2 the widest).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import autocomp
from autocomp.cli import app
from autocomp.errors import AutocompError
from autocomp.kernels.modules import QuantConv2d, QuantLinear, _QuantBase
from autocomp.kernels.validate import BOUNDS
from autocomp.policy import Policy

runner = CliRunner()
FP16_ULP = 2.0**-11
GPT2 = "autocomp.testing.hf:tiny_gpt2"


@pytest.fixture(scope="module")
def studies(ray_session, tmp_path_factory):
    """One database, two small searches: digits with pruning, tiny GPT-2 group-wise / asymmetric."""
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store

    db = f"sqlite:///{tmp_path_factory.mktemp('export') / 'study.db'}"
    store = Store(db)
    run_search(SearchConfig(model="digits", space="prune_quant", budget="size<=12%", points=3, proxy="fisher",
                            workers=2, baselines=(4,)), store, "pq")
    # NNCF's choice set with the embedding (tied to the head) held at INT8 asymmetric: every
    # policy mixes group-wise symmetric blocks with a per-channel asymmetric table, whatever the
    # allocator picks for the blocks.
    space = tmp_path_factory.mktemp("space") / "lm_mixed.yaml"
    space.write_text("name: lm_mixed\nchoices: [w4a32g128, w8a32z]\n"
                     "overrides:\n  - match: \"@embeddings\"\n    choices: [w8a32z]\n")
    run_search(SearchConfig(model=GPT2, space=str(space), budget="size<=40%", points=3, proxy="loss_delta",
                            workers=2, baselines=()), store, "lm")
    store.dispose()
    return db


def front_points(db: str, study: str) -> list[dict]:
    r = runner.invoke(app, ["front", "show", study, "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["points"]


def export(db: str, study: str, pid: str, out: Path, *extra: str) -> str:
    r = runner.invoke(app, ["front", "export", study, pid[:8], "--format", "checkpoint", "-o", str(out), "--db", db, *extra])
    assert r.exit_code == 0, r.output
    return r.stdout


def simulation(workload, policy: Policy):
    """The model the study evaluated for ``policy`` (rtn, ranges as the PTQ evaluator calibrates them)."""
    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.evaluators.ptq import ACT_BITS, build_quantizer
    from autocomp.modules import activation_layers

    model = workload.model()
    ranges = activation_ranges(activation_stats(model, [n for n, _ in activation_layers(model)], workload.calib), ACT_BITS)
    return build_quantizer("rtn").apply(model, policy, ranges, {}, batches=workload.calib)


def logits(out) -> torch.Tensor:
    return (out if isinstance(out, torch.Tensor) else out.logits).float()


def check_weights_match(loaded: torch.nn.Module, sim: torch.nn.Module, policy: Policy) -> int:
    """Every loaded layer's dequantized weight (kernel modules, embedding tables) is the simulated
    one up to the fp16 rounding of its scale; returns how many layers were checked."""
    from autocomp.export.load import QuantEmbedding
    from autocomp.modules import weight_of

    mods, sims, n = dict(loaded.named_modules()), dict(sim.named_modules()), 0
    for name, choice in policy.layers:
        mod = mods[name]
        if isinstance(mod, _QuantBase):
            got = mod.dequantized()
        elif isinstance(mod, QuantEmbedding):
            got = mod(torch.arange(mod.num_embeddings))
        else:
            continue
        want = weight_of(sims[name]).detach().float().reshape(got.shape)
        assert bool(((got - want).abs() <= want.abs() * FP16_ULP + 1e-12).all()), name
        if choice.prune:
            assert int((got == 0).sum()) >= round(choice.prune * want.numel()), name
        n += 1
    return n


def check_kernels(loaded: torch.nn.Module, sim: torch.nn.Module, sample) -> list:
    """Per kernel layer, fed its input in the simulation of the stored weights, the output error
    against that simulation is within the kernel table's bound (as ``autocomp validate`` checks)."""
    import copy

    from autocomp.kernels.validate import layer_errors
    from autocomp.modules import set_weight, weight_of

    stored = copy.deepcopy(sim)
    smods = dict(stored.named_modules())
    for name, mod in loaded.named_modules():
        if isinstance(mod, _QuantBase):
            set_weight(smods[name], mod.dequantized().reshape(weight_of(smods[name]).shape))
    checks = layer_errors(stored, loaded, sample, torch.device("cpu"))
    bad = [c for c in checks if not c.ok]
    assert checks and not bad, bad
    return checks


def file_vs_front(directory: Path, manifest: dict) -> float:
    """The checkpoint file's size against the front's ``size`` (a relative difference)."""
    file_bytes = (directory / "model.safetensors").stat().st_size
    assert manifest["front_size_counts"] == "all"
    assert 0 < sum(manifest["bytes"].values()) < file_bytes   # the tensors, then the header
    return file_bytes / manifest["front"]["size"] - 1.0


def test_digits_pruned_mixed_policy_round_trip(studies, digits, tmp_path, monkeypatch):
    pts = [p for p in front_points(studies, "pq") if not p["baseline"]]
    db = studies
    from autocomp.store import Store

    store = Store(db)
    st = store.get_study("pq")
    pols = {p["policy_id"]: Policy.from_dict(store.get_policy(st, p["policy_id"]).policy) for p in pts}
    store.dispose()
    mixed = [pid for pid, pol in pols.items()
             if any(c.prune > 0 for _, c in pol.layers) and len({c.w_bits for _, c in pol.layers}) > 1]
    assert mixed, "the prune_quant front holds no mixed policy with pruning"
    pid = mixed[0]
    out = tmp_path / "ck"
    line = export(db, "pq", pid, out)
    assert "model.safetensors" in line and "front size" in line and "header" in line
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors", "policy.json"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["format_version"] == 1 and man["model"] == "digits" and man["quantizer"] == "rtn"
    assert man["torch_version"] == torch.__version__ and man["policy_id"] == pid
    point = next(p for p in pts if p["policy_id"] == pid)
    assert man["front"]["size"] == point["size"] and man["front"]["quality"] == point["quality"]
    assert Policy.from_dict(json.loads((out / "policy.json").read_text())) == pols[pid]
    assert abs(file_vs_front(out, man)) <= 0.02
    pruned = [l for l in man["layers"] if "p" in l["choice"].lstrip("w").split("a")[1]]
    assert pruned and all(l["pruning"] in ("mask",) or l["pruning"].startswith("index") for l in pruned)

    def no_pickles(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickles)
    loaded = autocomp.load_compressed(out, digits.model)
    assert digits.model() is not loaded and not any(isinstance(m, _QuantBase) for m in digits.model().modules())
    kinds = {type(m) for m in loaded.modules()}
    assert QuantConv2d in kinds and QuantLinear in kinds
    sim = simulation(digits, pols[pid])
    assert check_weights_match(loaded, sim, pols[pid]) == len(pols[pid])
    x = digits.sample_input()
    assert len(check_kernels(loaded, sim, x)) == len(pols[pid])
    # whole model: 9 layers of fp16-rounded scales and 8-bit inputs compound; the answers agree
    with torch.no_grad():
        a, b = logits(loaded(x)), logits(sim(x))
    assert float((a.argmax(1) == b.argmax(1)).float().mean()) >= 0.97
    assert abs(digits.evaluate(loaded) - point["quality"]) <= 0.02


def test_tiny_gpt2_groupwise_asymmetric_tied_round_trip(studies, tmp_path):
    from autocomp.export.load import QuantEmbedding
    from autocomp.store import Store
    from autocomp.workload import load_workload

    db = studies
    store = Store(db)
    st = store.get_study("lm")
    pts = [p for p in front_points(db, "lm") if not p["baseline"]]
    pols = {p["policy_id"]: Policy.from_dict(store.get_policy(st, p["policy_id"]).policy) for p in pts}
    store.dispose()
    # the policy with the most layers of each kind: group-wise symmetric and per-channel asymmetric
    pid = max(pols, key=lambda i: min(sum(c.group is not None for _, c in pols[i].layers),
                                       sum(c.zero_point for _, c in pols[i].layers)))
    pol = pols[pid]
    assert any(c.group for _, c in pol.layers) and any(c.zero_point for _, c in pol.layers), pol.describe()
    out = tmp_path / "lm"
    export(db, "lm", pid, out, "--trust-stored-model")   # a module spec: importing it is consent
    man = json.loads((out / "manifest.json").read_text())
    assert abs(file_vs_front(out, man)) <= 0.02
    wte = next(l for l in man["layers"] if l["name"] == "transformer.wte")
    assert wte["aliases"] == ["lm_head"] and wte["kind"] == "embedding"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight.codes" in keys and not any(k.startswith("lm_head.") for k in keys)
    wl = load_workload(GPT2)
    loaded = autocomp.load_compressed(out, wl.model)
    assert isinstance(loaded.transformer.wte, QuantEmbedding) and isinstance(loaded.lm_head, QuantLinear)
    assert any(isinstance(m, QuantLinear) and m.zeros is not None for m in loaded.modules())
    assert any(isinstance(m, QuantLinear) and m.group_size for m in loaded.modules())
    sim = simulation(wl, pol)
    assert check_weights_match(loaded, sim, pol) == len(pol)
    x = wl.calib[0][0]
    check_kernels(loaded, sim, x)
    with torch.no_grad():
        a, b = logits(loaded(x)), logits(sim(x))
    # weight-only, inputs float: only the fp16 rounding of the scales separates the two
    assert float((a - b).abs().max() / b.abs().max()) <= BOUNDS["triton_wq"]


@pytest.fixture(scope="module")
def digits_ckpt(studies, tmp_path_factory):
    pid = next(p["policy_id"] for p in front_points(studies, "pq") if not p["baseline"])
    out = tmp_path_factory.mktemp("ck") / "ck"
    export(studies, "pq", pid, out)
    return out


def _tampered(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_text())
    change(man)
    (dst / "manifest.json").write_text(json.dumps(man))
    return dst


@pytest.mark.parametrize("change,expect", [
    (lambda m: m.update(format_version=99), "format version 99"),
    (lambda m: m["layers"].pop(1), "does not match the model"),
    (lambda m: m["layers"][0].update(weight_shape=[8, 1, 3, 3]), "the model's is a conv2d [16, 1, 3, 3]"),
    (lambda m: m["layers"][0].update(name="features.99"), "is not in the model"),
    (lambda m: m["layers"][0].update(kept=3), "layer data does not match"),
], ids=["version", "layer-missing", "shape", "unknown-layer", "codes-count"])
def test_tampered_manifest_is_one_error_line(digits_ckpt, digits, tmp_path, change, expect):
    bad = _tampered(digits_ckpt, tmp_path / "bad", change)
    with pytest.raises(AutocompError) as e:
        autocomp.load_compressed(bad, digits.model)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_force_replaces_an_existing_checkpoint(studies, digits_ckpt, tmp_path):
    out = tmp_path / "ck"
    shutil.copytree(digits_ckpt, out)
    (out / "stale.txt").write_text("old")
    pid = json.loads((out / "manifest.json").read_text())["policy_id"]
    export(studies, "pq", pid, out, "--force")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors", "policy.json"]
    assert (out / "model.safetensors").read_bytes() == (digits_ckpt / "model.safetensors").read_bytes()


def test_policy_format_is_still_the_default(studies, tmp_path):
    pid = next(p["policy_id"] for p in front_points(studies, "pq") if not p["baseline"])
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["front", "export", "pq", pid[:8], "-o", str(out), "--db", studies])
    assert r.exit_code == 0 and r.stdout.startswith(f"wrote policy {pid}"), r.output
    assert Policy.from_dict(json.loads(out.read_text())).id == pid


def test_import_autocomp_stays_light():
    code = "import sys, autocomp; print('torch' in sys.modules, callable(autocomp.load_compressed))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
