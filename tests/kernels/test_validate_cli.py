"""End to end on the CPU: `autocomp validate` writes measured latency and kernel error into the
study, `front show` displays it, `profile-latency` feeds latency budgets."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocomp.budget import CostModel, parse_budget
from autocomp.cli import app
from autocomp.kernels.latency import load_latency_table
from autocomp.policy import Choice, Policy
from autocomp.profile import model_param_count
from autocomp.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, digits, digits_layers):
    """A real study: three policies evaluated by the real PTQ evaluator (in process, no Ray)."""
    from autocomp.evaluators import get_evaluator

    url = f"sqlite:///{tmp_path_factory.mktemp('val') / 'study.db'}"
    store = Store(url)
    study, _ = store.open_study("val", {"model": "digits", "budget_text": "size<=25%"})
    store.save_layers(study, digits_layers)
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    store.update_config(study, fp32={m: cm.fp32(m) for m in ("size", "bitops", "avg_bits")}, front_costs=["size"])
    names = [l.name for l in digits_layers]
    mixed = Policy.from_choices(dict(zip(names, [Choice(8, 8)] + [Choice(4, 8)] * 7 + [Choice(8, 8)])))
    ev = get_evaluator("ptq")
    for pol, source in ((mixed, "ilp"), (Policy.uniform(names, Choice(8, 8)), "uniform"),
                        (Policy.uniform(names, Choice(32, 32)), "fp32")):
        store.save_policy(study, pol, source, source, cm.costs(pol))
        store.save_evaluation(study, ev.evaluate(digits, pol).with_costs(cm.costs(pol)))
    return url, mixed


def test_validate_writes_measured_latency_and_front_shows_it(study_db):
    url, mixed = study_db
    res = runner.invoke(app, ["validate", "val", "--db", url, "--device", "cpu", "--repeats", "3", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "cpu_int8:9" in res.output
    store = Store(url)
    evs = {e.policy_id: e for e in store.list_evaluations(store.get_study("val"))}
    assert len(evs) == 3
    for e in evs.values():
        assert e.latency > 0 and e.extra["device"] == "cpu"
        assert e.extra["latency_ms"] == pytest.approx(e.latency * 1e3)
        assert e.extra["speedup"] > 0 and e.extra["kernel_ok"] is True
    m = evs[mixed.id]
    assert m.extra["kernel_max_rel_err"] < 1e-4 and m.extra["kernel_backends"] == {"cpu_int8": 9}
    # the kernel model classifies as the simulation did (same integer math)
    assert m.extra["kernel_accuracy"] == pytest.approx(m.quality, abs=1 / 450)
    show = runner.invoke(app, ["front", "show", "val", "--db", url])
    assert show.exit_code == 0, show.output
    assert CostModel([]).format("latency", m.latency) in show.output and f"{m.extra['speedup']:.2f}x cpu" in show.output
    shown = json.loads(runner.invoke(app, ["front", "show", "val", "--db", url, "--json"]).output)
    assert {p["policy_id"]: p["speedup"] for p in shown["points"]}[mixed.id] == pytest.approx(m.extra["speedup"])


def test_validate_one_policy_and_user_errors(study_db):
    url, mixed = study_db
    res = runner.invoke(app, ["validate", "val", "--db", url, "--policy", mixed.id[:6], "--device", "cpu",
                              "--repeats", "2"])
    assert res.exit_code == 0, res.output
    assert f"validated {mixed.id}" in res.output and res.output.count("validated ") == 1
    for args, msg in ((["validate", "nope", "--db", url], "no study named 'nope'"),
                      (["validate", "val", "--db", url, "--policy", "ffffffff"], "has no policy"),
                      (["validate", "val", "--db", url, "--device", "tpu"], "unknown device")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and msg in r.output, r.output


def test_profile_latency_table_drives_a_latency_budget(tmp_path, digits, digits_layers):
    from autocomp.allocators import get_allocator
    from autocomp.proxies import get_proxy
    from autocomp.search_spaces import load_space

    out = tmp_path / "lat.json"
    res = runner.invoke(app, ["profile-latency", "--model", "digits", "-o", str(out), "--device", "cpu",
                              "--repeats", "3", "--threads", "1"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and doc["batch"] == digits.sample_input().shape[0]
    table = load_latency_table(out)
    space = load_space("mixed_precision")
    keys = {c.key for c in space.choices_for(digits_layers[1], len(digits_layers))} | {"w32a32"}
    assert set(table) == {l.name for l in digits_layers}
    assert keys <= set(table[digits_layers[1].name]) and all(v > 0 for r in table.values() for v in r.values())
    cm = CostModel(digits_layers, latency_table=table)
    fastest = sum(min(v for k, v in table[l.name].items() if k != "w32a32") for l in digits_layers)
    # An absolute bound the table can meet however the timings fell (on a loaded machine the
    # low-bit kernels can even be slower than fp32, so no relative bound is safe).
    budget = parse_budget(f"latency<={max(fastest * 1.05, 0.7 * cm.fp32('latency')) * 1e3:.6g}ms")
    sens = get_proxy("quant_mse").score(digits, digits_layers, space)
    alloc = get_allocator("ilp").solve(digits_layers, sens, space, budget.resolve(cm), cm)
    assert cm.satisfies(alloc.policy, budget)
    assert cm.cost("latency", alloc.policy) <= budget.constraints[0].limit(cm) * (1 + 1e-9)


def test_search_latency_budget_needs_a_table(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    r = runner.invoke(app, ["search", "--budget", "latency<=70%", "--db", db, "--study", "a"])
    assert r.exit_code == 2 and "autocomp profile-latency" in r.output, r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = runner.invoke(app, ["search", "--budget", "latency<=70%", "--db", db, "--study", "b", "--latency-table", str(bad)])
    assert r.exit_code == 2 and "is not JSON" in r.output, r.output
