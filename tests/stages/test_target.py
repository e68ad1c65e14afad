"""The target stage on digits (real Ray, real SQLite): the answer meets the target, the bracket's
failing side really fails, a re-run evaluates nothing, an unreachable target fails in one line
with its evaluations kept, and the CLI shows the answer."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.errors import AutocompError
from autocomp.search import SearchConfig, run_search
from autocomp.store import Store
from autocomp.target import parse_target

CFG = dict(model="digits", proxy="fisher", workers=2, target="drop<=1%", max_evals=5, target_tol=0.03)


@pytest.fixture(scope="module")
def sought(ray_session, tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('target') / 't.db'}")
    return store, run_search(SearchConfig(**CFG), store, "t")


def _quality(store: Store, study: str) -> dict[str, float]:
    return {e.policy_id: e.quality for e in store.list_evaluations(store.get_study(study))}


def test_answer_meets_the_target_and_the_bracket_fails_below_it(sought):
    store, res = sought
    st = store.get_study("t")
    tr = st.config["target_result"]
    assert tr == res.target and tr["reachable"]
    q, fp32 = _quality(store, "t"), st.config["fp32"]["size"]
    a = tr["answer"]
    assert q[a["policy_id"]] == a["quality"] and parse_target("drop<=1%").met(a["quality"], tr["reference"], "accuracy")
    assert a["quality"] >= 0.99 * tr["reference"] - 1e-12 and a["cost"] < 0.25 * fp32 * (1 + 1e-9)
    fail = tr["bracket"]["fail"]
    assert fail is not None, tr["probes"]
    assert fail["cost"] < a["cost"] and q[fail["policy_id"]] < tr["threshold"]
    # Every probe is a stored, evaluated policy; the cheapest passing one is the answer.
    pols = {p.policy_id: p for p in store.list_policies(st)}
    assert all(p["policy_id"] in q and pols[p["policy_id"]].source in ("target", "fp32") for p in tr["probes"])
    assert min(p["cost"] for p in tr["probes"] if p["passed"]) == a["cost"]
    assert len(tr["probes"]) <= CFG["max_evals"] and res.evaluated_now == len(q)


def test_rerun_evaluates_nothing_and_ends_on_the_same_answer(sought):
    store, res = sought
    again = run_search(SearchConfig(**CFG), store, "t")
    assert again.evaluated_now == 0 and again.skipped > 0
    assert again.target["answer"] == res.target["answer"] and again.target["bracket"] == res.target["bracket"]
    assert len(store.list_evaluations(store.get_study("t"))) == res.evaluated_now


def test_unreachable_target_names_the_best_value_and_keeps_evaluations(sought):
    store, res = sought
    mildest = res.target["probes"][0]["quality"]   # the allocator at the budget's bound
    assert mildest < 1.0, "digits at size<=25% reached accuracy 1: no valid unreachable target"
    target = f"metric>={mildest + 1e-4:.6f}"
    cfg = SearchConfig(**{**CFG, "target": target})
    msg = rf"unreachable within size<=25%: the best achievable accuracy is {mildest:.4f}"
    with pytest.raises(AutocompError, match=msg) as e:
        run_search(cfg, store, "u")
    assert "\n" not in str(e.value)
    st = store.get_study("u")
    assert st.config["target_result"]["reachable"] is False and st.status == "failed"
    assert len(store.list_evaluations(st)) == 2        # fp32 and the mildest policy, kept


def test_wrong_direction_fails_before_anything_is_written(ray_session, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    with pytest.raises(AutocompError, match="wrong way"):
        run_search(SearchConfig(**{**CFG, "target": "accuracy<=0.9"}), store, "w")
    assert store.get_study("w", missing_ok=True) is None


def test_cli_target_end_to_end(sought, tmp_path):
    store, _ = sought
    db = str(store.url)
    runner = CliRunner()
    args = ["search", "--study", "t", "--db", db, "--proxy", "fisher", "--workers", "2", "--budget", "size<=25%",
            "--target", "drop<=1%", "--max-evals", "5", "--target-tol", "0.03"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["target"]["answer"]["policy_id"] == store.get_study("t").config["target_result"]["answer"]["policy_id"]
    shown = runner.invoke(app, ["front", "show", "t", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert "target drop<=1% (accuracy>=" in shown.stdout and doc["target"]["answer"]["policy_id"] in shown.stdout
    js = json.loads(runner.invoke(app, ["front", "show", "t", "--db", db, "--json"]).stdout)
    assert js["target"]["bracket"]["fail"]["policy_id"] == doc["target"]["bracket"]["fail"]["policy_id"]
    bad = runner.invoke(app, ["search", "--study", "x", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                              "--target", "accuracy>=1.01"])
    assert bad.exit_code == 2 and "lies in [0, 1]" in bad.output
    assert Store(f"sqlite:///{tmp_path}/x.db").get_study("x", missing_ok=True) is None   # nothing written
