"""Devices and evaluation dtype, on this CPU-only machine: ``auto`` resolves to the CPU, ``cuda``
is refused in one line before anything runs or is written, nothing moves on the CPU (results are
those of before), and a bfloat16 / float16 evaluation really runs under autocast on the CPU."""
from __future__ import annotations

import dataclasses
import sqlite3

import pytest
import torch

from autocomp.devices import autocast, on_device, resolve_device, to_device
from autocomp.errors import AutocompError
from autocomp.evaluators import DeviceOptions, get_evaluator
from autocomp.modules import call_model
from autocomp.policy import Choice, Policy
from autocomp.workers.placement import gpu_share, place
from autocomp.workers.pool import EvaluatorPool

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only paths")


def _policy(layers, bits=4):
    return Policy.from_choices([(l.name, Choice(8 if i == 0 else bits, 8)) for i, l in enumerate(layers)])


def _logit_dtype_workload(wl):
    """``wl`` whose quality is 1 when the evaluation forward pass yields bfloat16 logits."""
    def metric(model, batches):
        with torch.no_grad():
            return float(call_model(model, batches[0][0]).dtype == torch.bfloat16)
    return dataclasses.replace(wl, metric=metric, _model=wl.model())


def test_resolution_and_shares():
    assert resolve_device("auto", 0) == "cpu" and resolve_device("cpu", 4) == "cpu"
    assert resolve_device("auto", 1) == "cuda" and resolve_device("cuda", 0.5) == "cuda"
    with pytest.raises(AutocompError, match="reports no GPU"):
        resolve_device("cuda", 0)
    with pytest.raises(AutocompError, match="must be one of auto, cpu, cuda"):
        resolve_device("tpu", 1)
    assert gpu_share(1, 4) == 0.25 and gpu_share(1, 3) * 3 <= 1 and gpu_share(4, 2) == 1.0
    assert gpu_share(0, 4) == 0.0


def test_every_evaluator_has_the_device_options():
    for name in ("ptq", "qat"):
        ev = get_evaluator(name)
        assert isinstance(ev.options, DeviceOptions)
        assert (ev.options.device, ev.options.eval_dtype) == ("cpu", "float32")
        assert get_evaluator(name, device="auto").device == "cpu"      # no GPU in this process
    for opts, match in [({"device": "tpu"}, "evaluator 'ptq': device must be one of"),
                        ({"eval_dtype": "float8"}, "evaluator 'ptq': eval_dtype must be one of")]:
        with pytest.raises(AutocompError, match=match) as e:
            get_evaluator("ptq", **opts)
        assert "\n" not in str(e.value)


def test_on_the_cpu_nothing_moves_and_results_are_unchanged(digits, digits_layers):
    assert on_device(digits, "cpu") is digits
    batch = to_device({"x": torch.ones(2), "pair": (torch.zeros(1), 3)}, "cpu")
    assert batch["x"].device.type == "cpu" and batch["pair"][1] == 3
    pol = _policy(digits_layers)
    plain, placed = get_evaluator("ptq"), get_evaluator("ptq", device="cpu")
    assert placed.prepare(digits) is digits
    assert placed.evaluate(digits, pol).quality == plain.evaluate(digits, pol).quality


def test_cuda_in_a_process_without_one_is_one_line(digits):
    ev = get_evaluator("ptq", device="cuda")          # a valid option: the check is where it runs
    with pytest.raises(AutocompError, match="sees no CUDA device"):
        ev.prepare(digits)


def test_bfloat16_evaluation_runs_under_autocast_on_the_cpu(digits, digits_layers):
    pol = _policy(digits_layers, bits=8)
    probe = _logit_dtype_workload(digits)
    assert get_evaluator("ptq", eval_dtype="bfloat16").evaluate(probe, pol).quality == 1.0
    assert get_evaluator("ptq").evaluate(probe, pol).quality == 0.0
    fp32 = get_evaluator("ptq").evaluate(digits, pol).quality
    bf16 = get_evaluator("ptq", eval_dtype="bfloat16").evaluate(digits, pol).quality
    assert abs(bf16 - fp32) < 0.05        # bfloat16 keeps 8 bits of mantissa: a close, not equal, score
    with autocast("cpu", "float16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    qat = get_evaluator("qat", epochs=0, eval_dtype="bfloat16").evaluate(probe, pol)
    assert qat.quality == 1.0


def test_pool_and_proxy_tasks_on_a_cpu_cluster(ray_session, digits, digits_layers):
    assert place("auto", 2) == ("cpu", 0.0)
    with pytest.raises(AutocompError, match="--device cuda: the Ray cluster reports no GPU"):
        EvaluatorPool("digits", "ptq", workers=1, device="cuda")
    with pytest.raises(AutocompError, match="reports no GPU"):
        EvaluatorPool("digits", "ptq", {"device": "cuda"}, workers=1)
    from autocomp.search_spaces import load_space
    from autocomp.workers.proxy_tasks import score_on_ray

    space = load_space("mixed_precision")
    with pytest.raises(AutocompError, match="reports no GPU"):
        score_on_ray("digits", "quant_mse", digits_layers, space, device="cuda")
    auto = score_on_ray("digits", "quant_mse", digits_layers, space, device="auto", workers=1)
    assert auto == score_on_ray("digits", "quant_mse", digits_layers, space, device="cpu", workers=1)
    assert set(auto.omega) == {l.name for l in digits_layers}
    pol = _policy(digits_layers)
    got = []
    with EvaluatorPool("digits", "ptq", {"eval_dtype": "bfloat16"}, workers=1) as pool:
        assert pool.device == "cpu" and pool.options["device"] == "cpu"
        pool.map([pol], got.append)
    assert got[0].quality == get_evaluator("ptq", eval_dtype="bfloat16").evaluate(digits, pol).quality


def _studies(db) -> int:
    """Studies the database holds (0 when the schema or the file does not exist)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        tables = [r[0] for r in c.execute("select name from sqlite_master where type='table'")]
        return c.execute("select count(*) from autocomp_studies").fetchone()[0] if "autocomp_studies" in tables else 0


@pytest.mark.parametrize("argv, expect", [
    (["--device", "tpu"], "--device must be one of auto, cpu, cuda"),
    (["--eval-dtype", "float8"], "--eval-dtype must be one of float32, float16, bfloat16"),
    (["--device", "cuda"], "--device cuda: the Ray cluster reports no GPU"),
])
def test_search_device_refusals_are_one_line_exit_2_and_write_nothing(argv, expect, ray_session, digits, capfd,
                                                                      tmp_path, monkeypatch):
    from autocomp.cli import main

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as exc:
        main(["search", "--model", "digits", "--db", f"sqlite:///{db}", "--study", "dev", *argv])
    out, err = capfd.readouterr()
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1 and expect in errors[0], out + err
    assert "Traceback" not in out + err
    assert _studies(db) == 0                  # no study written (the file may not even exist)


def test_search_config_stores_what_it_stored_unless_the_dtype_changes():
    from autocomp.search import SearchConfig

    d = SearchConfig().to_dict()
    assert "device" not in d and "eval_dtype" not in d
    cfg = SearchConfig(device="cpu", eval_dtype="bfloat16")
    assert cfg.to_dict()["eval_dtype"] == "bfloat16" and "--eval-dtype bfloat16" in cfg.resume_command("s")
