"""The proxy audit end to end (Ray evaluation, SQLite), its CLI, and ``search --proxy auto``."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocomp.audit import best_proxy, rank_correlations, sample_policies
from autocomp.cli import app
from autocomp.search_spaces import load_space
from autocomp.store import Store


def test_sampled_policies_sweep_the_cost_range(digits_layers):
    pols = sample_policies(digits_layers, load_space("mixed_precision"), 8, seed=0)
    assert len({p.id for p in pols}) == 8
    bits = [sum(c.w_bits for _, c in p.layers) / len(p) for p in pols]
    assert bits[0] > 6 and bits[-1] < 4   # mildest first, harshest last


def test_rank_correlations():
    assert rank_correlations([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx((1.0, 1.0))
    assert rank_correlations([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx((-1.0, -1.0))
    assert rank_correlations([1, 1, 1], [1, 2, 3]) == (None, None)


def test_cli_list_and_one_line_errors(sqlite_url):
    r = CliRunner().invoke(app, ["proxies", "list", "--json"])
    assert r.exit_code == 0 and "hessian_trace" in json.loads(r.output)
    for args, msg in ((["proxies", "audit", "--proxy", "nope", "--db", sqlite_url], "unknown proxy 'nope'"),
                      (["proxies", "audit", "--samples", "1", "--db", sqlite_url], "--samples must be at least 2"),
                      (["search", "--proxy", "nope", "--db", sqlite_url], "unknown proxy 'nope'"),
                      (["search", "--data", "imagenet", "--db", sqlite_url], "unknown --data 'imagenet'")):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1


def test_search_with_proxy_auto_then_the_audit_cli(ray_session, sqlite_url):
    from autocomp.search import SearchConfig, run_search

    store = Store(sqlite_url)
    cfg = SearchConfig(model="digits", budget="size<=30%", proxy="auto", auto_samples=5,
                       auto_proxies=("quant_mse", "fisher"), points=1, baselines=(8,), workers=2)
    result = run_search(cfg, store, "auto")
    assert result.front
    st = store.get_study("auto")
    rows = store.load_audits(store.get_study("auto-audit"))   # the audit is stored in the database
    assert {r["proxy"] for r in rows} == {"quant_mse", "fisher"}
    evaluated = len(store.evaluated_ids(store.get_study("auto-audit")))   # each policy once, and fp32
    # 5 evaluations: 2 anchors spread over the range, each with 2 band mates of about its size
    # (a mate equal to a policy already drawn is not drawn twice)
    assert 4 <= evaluated <= 7
    for r in rows:
        assert r["samples"] == evaluated - 1 and -1 <= r["spearman"] <= 1 and -1 <= r["kendall"] <= 1
    assert any(r.get("band_spearman") is not None for r in rows)       # --proxy auto ranks by bands
    assert st.config["proxy_chosen"] == best_proxy(rows)
    assert st.config["auto_band_mates"] == 2
    assert store.scored_proxies(st) == [st.config["proxy_chosen"]]

    # The CLI on the same study, same sample, reuses the stored evaluations and re-scores one proxy.
    res = CliRunner().invoke(app, ["proxies", "audit", "--model", "digits", "--samples", "2", "--band-mates", "2",
                                   "--proxy", "quant_mse", "--study", "auto-audit", "--db", sqlite_url, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["audit"][0]["proxy"] == "quant_mse"
    assert out["audit"][0]["spearman"] == pytest.approx(next(r for r in rows if r["proxy"] == "quant_mse")["spearman"])
    assert len(store.evaluated_ids(store.get_study("auto-audit"))) == evaluated
    res = CliRunner().invoke(app, ["proxies", "audit", "--model", "digits", "--samples", "2", "--band-mates", "2",
                                   "--proxy", "quant_mse", "--study", "auto-audit", "--db", sqlite_url])
    assert res.exit_code == 0 and "spearman" in res.output
