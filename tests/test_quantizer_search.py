"""Quantizers in the evaluation and the search: ``PTQEvaluator(quantizer=...)`` (rtn bit-identical
to :func:`autocomp.policy.apply`, statistics collected once per workload) and ``autocomp search
--quantizer`` end to end on ``digits`` with a real local Ray and SQLite (a distinct evaluation
kind, shown by ``front show``, a resume with another quantizer refused)."""
from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.cli import app
from autocomp.evaluators import get_evaluator
from autocomp.evaluators.ptq import ACT_BITS
from autocomp.modules import activation_layers
from autocomp.policy import Choice, Policy, apply
import autocomp.quantizers as quantizers
from autocomp.quantizers import LayerResult, collect_stats, list_quantizers, register
from autocomp.quantizers.rtn import RTNQuantizer
from autocomp.search import SearchConfig, check_config, proxy_options
from autocomp.store.repository import ptq_kind

runner = CliRunner()


class MeanShift(RTNQuantizer):
    """rtn, then the layer's mean output shift removed with its calibration input mean (a test
    quantizer that needs statistics); records the statistics objects it was given."""

    name = "test_mean_shift"
    needs = frozenset({"mean", "hessian"})
    seen: list = []

    def quantize_layer(self, name, module, choice, stats):
        MeanShift.seen.append((name, stats))
        res = super().quantize_layer(name, module, choice, stats)
        w = module.weight.detach().reshape(res.weight.shape[0], -1)
        return LayerResult(res.weight, ((w - res.weight.reshape(w.shape)) @ stats.mean).reshape(-1))


@pytest.fixture
def mean_shift(monkeypatch):
    """``test_mean_shift`` registered for this test only (the quantizer contract lists the registry)."""
    monkeypatch.setattr(quantizers, "_REGISTRY", quantizers._REGISTRY.copy())
    register(MeanShift)
    MeanShift.seen.clear()
    return MeanShift


def _policies(names: list[str]) -> list[Policy]:
    mixed = {n: Choice(4 if i % 2 else 8, 8, 0.25 if i == 3 else 0.0) for i, n in enumerate(names)}
    return [Policy.uniform(names, Choice(4, 8)), Policy.uniform(names, Choice(3, 32, 0.5)),
            Policy.from_choices(mixed), Policy.uniform(names, Choice(2, 8, group=16, zero_point=True))]


def test_rtn_is_bit_identical_to_apply(digits):
    model = digits.model()
    names = [n for n, _ in activation_layers(model)]
    ranges = activation_ranges(activation_stats(model, names, digits.calib), ACT_BITS)
    ev = get_evaluator("ptq")       # quantizer rtn by default
    for pol in _policies(names):
        before = digits.evaluate(apply(model, pol, ranges))   # the path every evaluation took until now
        assert ev.evaluate(digits, pol).quality == before, pol.describe()


def test_statistics_are_collected_once_and_used(digits, mean_shift):
    model = digits.model()
    names = [n for n, _ in activation_layers(model)]
    ev = get_evaluator("ptq", quantizer="test_mean_shift")
    pols = _policies(names)[:2]
    got = [ev.evaluate(digits, p).quality for p in pols]
    by_layer: dict[str, set[int]] = {}
    for name, st in MeanShift.seen:
        assert st is not None and st.rows > 0 and st.mean is not None and st.hessian is not None, name
        assert st.hessian.shape == (st.mean.numel(), st.mean.numel())
        by_layer.setdefault(name, set()).add(id(st))
    assert set(by_layer) == set(names)
    assert all(len(ids) == 1 for ids in by_layer.values())   # one calibration for both policies
    # the evaluator's result is the quantizer applied with the float model's statistics
    ranges = activation_ranges(activation_stats(model, names, digits.calib), ACT_BITS)
    stats = collect_stats(model, digits.calib, names, MeanShift.needs)
    for pol, q in zip(pols, got):
        assert q == digits.evaluate(MeanShift().apply(model, pol, ranges, stats))


def test_config_kind_and_proxy_options():
    cfg = SearchConfig(quantizer="rtn()")
    check_config(cfg)
    assert cfg.quantizer == "rtn" and "quantizer" not in cfg.to_dict()   # stored configs as before
    gp = SearchConfig(quantizer=" gptq ")
    check_config(gp)
    assert gp.to_dict()["quantizer"] == "gptq" and "--quantizer gptq" in gp.resume_command("s")
    assert (ptq_kind(), ptq_kind("rtn"), ptq_kind("gptq")) == ("ptq", "ptq", "ptq:gptq")
    long = ptq_kind("gptq(act_order=True, damp=0.05, block=64)")
    assert long.startswith("ptq:") and len(long) <= 32 and long != ptq_kind("gptq(act_order=True)")
    assert proxy_options("loss_delta", "gptq") == {"quantizer": "gptq"}
    assert proxy_options("loss_delta", "rtn") == {} and proxy_options("snip", "gptq") == {}


def _kinds(db: str) -> dict[str, int]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return dict(conn.execute("SELECT kind, count(*) FROM autocomp_evaluations GROUP BY kind"))


def _rows(db: str) -> list[str]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return list(conn.iterdump())


@pytest.mark.skipif("gptq" not in list_quantizers(), reason="gptq is not registered")
def test_search_with_gptq_end_to_end(ray_session, tmp_path, digits):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    args = ["search", "--study", "q", "--db", db, "--points", "1", "--proxy", "quant_mse"]
    r = runner.invoke(app, [*args, "--quantizer", "gptq"])
    assert r.exit_code == 0, r.output
    assert "quantizer: gptq" in r.stdout
    kinds = _kinds(db)
    assert set(kinds) == {"ptq:gptq"} and kinds["ptq:gptq"] >= 5, kinds

    shown = runner.invoke(app, ["front", "show", "q", "--db", db, "--json"])
    doc = json.loads(shown.stdout)
    assert doc["quantizer"] == "gptq" and len(doc["points"]) >= 5
    # stored qualities came from gptq on the workers, not from rtn
    model = digits.model()
    names = [n for n, _ in activation_layers(model)]
    w2 = next(p for p in doc["points"] if p["label"] == "uniform w2a8")
    pol = Policy.uniform(names, Choice(2, 8))
    assert w2["policy_id"] == pol.id
    here = get_evaluator("ptq", quantizer="gptq").evaluate(digits, pol).quality
    rtn = get_evaluator("ptq").evaluate(digits, pol).quality
    # within a few test images of this process's gptq (another thread count rounds the Hessian
    # differently), far from rtn's
    assert abs(w2["accuracy"] - here) <= 0.01 < abs(w2["accuracy"] - rtn), (w2["accuracy"], here, rtn)

    before = _rows(db)
    refused = runner.invoke(app, [*args, "--quantizer", "rtn"])
    assert refused.exit_code == 2, refused.output
    errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "evaluated with quantizer 'gptq', not 'rtn'" in errors[0], refused.output
    assert _rows(db) == before     # nothing written

    again = runner.invoke(app, [*args, "--quantizer", "gptq"])
    assert again.exit_code == 0 and "0 evaluated now" in again.stdout, again.output
    assert _kinds(db) == kinds
