"""refine_nas end to end on a real local Ray and a real SQLite study: Tune trials chosen by
OptunaSearch, ASHA stopping, retries then failure with the reason, resume."""
from __future__ import annotations

import optuna
import pytest

from autocomp.budget import parse_budget
from autocomp.layout import file_layout
from autocomp.nas_models import candidate_costs, profile_candidate
from autocomp.policy import Policy
from autocomp.profile import model_param_count
from autocomp.refine_nas import KIND, SOURCE, refine_nas
from autocomp.search_spaces import load_space
from autocomp.stages.context import make_context
from autocomp.store import Store


@pytest.fixture
def nas_study(sqlite_url, digits, digits_layers, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_TUNE_DIR", str(tmp_path / "tune"))
    model = digits.model()
    ctx = make_context("digits", digits_layers, load_space("mixed_precision"), parse_budget("size<=25%"),
                       model_param_count(model), layout=file_layout(model, digits_layers))
    store = Store(sqlite_url)
    st, _ = store.open_study("n", {"model": "digits"})
    store.save_layers(st, digits_layers)
    store.update_config(st, **ctx.stored_config())
    return store, st, ctx


def test_refine_nas_stores_candidates_with_their_own_costs_stops_some_early_and_resumes(ray_session, nas_study,
                                                                                     sqlite_url):
    store, st, ctx = nas_study
    res = refine_nas(store, st, ctx, n=6, seed=0, steps=24, max_concurrent=2, reports=4)
    assert res.done == 6 and not res.failures and res.evaluated + res.rejected + res.reused == 6
    nas = [p for p in store.list_policies(st) if p.source == SOURCE]
    assert 6 - res.reused == len(nas) >= 1      # two trials may sample one candidate: one policy
    evals = {e.policy_id: e for e in store.list_evaluations(st, kind=KIND)}
    assert len(evals) == res.evaluated >= 1
    for p in nas:
        pol = Policy.from_dict(p.policy)
        assert pol.arch is not None and pol.arch.family == "digits-cnn" and p.info["arch"] == pol.arch.key
        model, layers = profile_candidate(pol.arch)
        assert [n for n, _ in pol.layers] == [l.name for l in layers]
        own = candidate_costs(model, layers, pol, full_size=True)
        assert p.costs == pytest.approx(own)
        if p.policy_id in evals:
            e = evals[p.policy_id]
            assert e.size == pytest.approx(own["size"]) and e.bitops == pytest.approx(own["bitops"])
            assert 0.0 <= e.quality <= 1.0 and e.extra["steps"] == 24 and p.info["iterations"] == 5
        else:   # stopped by ASHA: Tune ran fewer iterations than the 4 reports + the PTQ score
            assert p.info["iterations"] < 5 and "ASHA" in p.info["stopped"]
    # ASHA (reduction factor 2, rungs at 2 and 4 reports) stops at least one of six trials
    assert any(p.info["iterations"] < 5 for p in nas)
    trials = optuna.load_study(study_name="n:nas", storage=sqlite_url).trials
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    again = refine_nas(store, st, ctx, n=6, seed=0, steps=24, max_concurrent=2, reports=4)
    assert again.done == 6 and again.evaluated == again.rejected == again.failed == 0
    assert len(optuna.load_study(study_name="n:nas", storage=sqlite_url).trials) == 6


BAD_SPACE = """\
name: nas_bad_kernel
w_bits: [4]
overrides:
  - match: "@first"
    w_bits: [8]
  - match: "@last"
    w_bits: [8]
nas:
  family: digits-cnn
  depth: [2]
  block:
    op: [conv]
    kernel: [4]
    width: [1]
"""


def test_a_candidate_the_builder_rejects_is_retried_then_failed_with_its_reason(ray_session, nas_study, tmp_path):
    store, st, ctx = nas_study
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_SPACE)
    res = refine_nas(store, st, ctx, n=1, steps=8, max_concurrent=1, space=str(path), max_failures=1)
    assert res.failed == 1 and res.done == 0 and res.evaluated == 0
    assert "kernel must be odd" in res.failures[0]
    attempts = [t for t in optuna.load_study(study_name="n:nas", storage=store.url).trials]
    assert [t.state for t in attempts] == [optuna.trial.TrialState.FAIL]
