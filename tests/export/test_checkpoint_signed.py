"""Checkpoints of studies on the full-range (signed) symmetric grid: ``--quantizer absmax`` on
digits and ``gptq(clip=false)`` on a tiny GPT-2. Their scales may be negative (the row's largest
weight sits on the code ``-2^(b-1)`` whatever its sign); the export must keep that sign, the loaded
kernels must reproduce the study's simulation, and what the front stored must still be what the
checkpoint scores. Real searches (real Ray, SQLite, HiGHS), real trained digits model.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import autocomp
from autocomp.kernels.modules import _QuantBase
from autocomp.kernels.validate import BOUNDS
from autocomp.policy import Policy

from .test_checkpoint import GPT2, check_kernels, check_weights_match, export, front_points, logits


@pytest.fixture(scope="module")
def signed_studies(ray_session, tmp_path_factory):
    """One database: digits under ``absmax``, a tiny GPT-2 under ``gptq(clip=false)``."""
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store

    db = f"sqlite:///{tmp_path_factory.mktemp('signed') / 'study.db'}"
    store = Store(db)
    run_search(SearchConfig(model="digits", space="mixed_precision", budget="size<=10%", points=2, proxy="quant_mse",
                            workers=2, baselines=(4,), quantizer="absmax"), store, "absmax")
    run_search(SearchConfig(model=GPT2, space="weight_only", budget="size<=30%", points=2, proxy="quant_mse",
                            workers=2, baselines=(), quantizer="gptq(clip=false)"), store, "gptq-full")
    store.dispose()
    return db


def _simulation(workload, policy: Policy, spec: str):
    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.evaluators.ptq import ACT_BITS, build_quantizer
    from autocomp.modules import activation_layers
    from autocomp.quantizers import collect_stats

    model = workload.model()
    q = build_quantizer(spec)
    names = [n for n, _ in activation_layers(model)]
    ranges = activation_ranges(activation_stats(model, names, workload.calib), ACT_BITS)
    stats = collect_stats(model, workload.calib, names, q.needs)
    return q.apply(model, policy, ranges, stats, batches=workload.calib)


def _best(db: str, study: str) -> tuple[dict, Policy]:
    from autocomp.store import Store

    pts = [p for p in front_points(db, study) if not p["baseline"]]
    assert pts, f"{study}: no searched policy on the front"
    store = Store(db)
    try:
        st = store.get_study(study)
        pt = min(pts, key=lambda p: p["size"])
        return pt, Policy.from_dict(store.get_policy(st, pt["policy_id"]).policy)
    finally:
        store.dispose()


def _negative_scales(path) -> int:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return sum(int((f.get_tensor(k) < 0).sum()) for k in f.keys() if k.endswith(".scale"))


@pytest.mark.parametrize("study, model, spec", [("absmax", "digits", "absmax"),
                                                ("gptq-full", GPT2, "gptq(clip=false)")])
def test_signed_grid_study_round_trips(signed_studies, tmp_path, study, model, spec):
    from autocomp.workload import load_workload

    pt, pol = _best(signed_studies, study)
    out = tmp_path / study
    export(signed_studies, study, pt["policy_id"], out, *(["--trust-stored-model"] if model == GPT2 else []))
    man = json.loads((out / "manifest.json").read_text())
    from autocomp.evaluators.ptq import build_quantizer

    assert man["quantizer"] == build_quantizer(spec).spec   # canonical: gptq(clip=False)
    # the full range puts a positive extreme on the negative code: some scales are stored negative
    assert _negative_scales(out) > 0
    wl = load_workload(model)
    loaded = autocomp.load_compressed(out, wl.model)
    assert any(isinstance(m, _QuantBase) for m in loaded.modules())
    sim = _simulation(wl, pol, spec)
    assert check_weights_match(loaded, sim, pol) == len(pol)
    x = wl.sample_input() if model == "digits" else wl.calib[0][0]
    check_kernels(loaded, sim, x)
    with torch.no_grad():
        a, b = logits(loaded(x)), logits(sim(x))
    if model == "digits":
        assert float((a.argmax(1) == b.argmax(1)).float().mean()) >= 0.97
        assert abs(wl.evaluate(loaded) - pt["quality"]) <= 0.02
    else:   # weight-only, float inputs: only the fp16 rounding of the scales separates the two
        assert float((a - b).abs().max() / b.abs().max()) <= BOUNDS["triton_wq"]
        assert abs(wl.evaluate(loaded) / pt["quality"] - 1) <= 0.01
