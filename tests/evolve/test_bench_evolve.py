"""A proxy bench on digits (real Ray evaluations, SQLite) and an evolution on it (Ray tasks)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from autocomp.bands import cost_bands
from autocomp.cli import app
from autocomp.errors import AutocompError
from autocomp.evolution import EvolveConfig, _select, run_evolution, save_evolved, screen_and_score, split_bands
from autocomp.proxies.evolved.primitives import CHOICE, NAMES
from autocomp.stages.bench import BenchConfig, load_bench, run_bench
from autocomp.store import Store

SAMPLES = 9


@pytest.fixture(scope="module")
def bench_db(tmp_path_factory, ray_session):
    path = tmp_path_factory.mktemp("bench") / "bench.db"
    store = Store(f"sqlite:///{path}")
    first = run_bench(BenchConfig(model="digits", samples=SAMPLES, workers=2), store, "b")
    store.dispose()
    return path, first


def test_bench_stores_policies_primitives_and_resumes_evaluating_nothing(bench_db):
    path, first = bench_db
    store = Store(f"sqlite:///{path}")
    assert first["evaluated"] == SAMPLES + 1 and "hessian_trace" in first["scored"]
    again = run_bench(BenchConfig(model="digits", samples=SAMPLES, workers=2), store, "b")
    assert again["evaluated"] == 0 and again["scored"] == []
    study = store.get_study("b")
    assert len(store.evaluated_ids(study, "ptq")) == SAMPLES + 1     # fp32 and each policy, once
    bench = load_bench(store, "b")
    assert len(bench.policies) == SAMPLES and len(bench.drops) == SAMPLES
    assert sum(len(b) >= 3 for b in cost_bands(bench.costs, 0.05)) >= 2   # dense within bands
    names = {l.name for l in bench.layers}
    for prim in set(NAMES) - set(CHOICE):
        table = bench.primitives.layer.get(prim) or bench.primitives.choice.get(prim)
        assert set(table) == names, prim
    assert all(len(cs) > 1 for cs in bench.primitives.choice["perturb"].values())
    with pytest.raises(AutocompError, match="no proxy bench 'nope'"):
        load_bench(store, "nope")


def test_screen_rejects_invalid_constant_nonfinite_and_duplicates():
    data = {"env": {"a": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([2.0, 0.0, 0.0, 0.0])},
            "layer": np.array([0, 0, 1, 1]), "idx": np.array([[0, 2], [1, 2], [1, 3], [0, 2], [1, 2], [1, 3]]),
            "drops": np.array([1.0, 2.0, 3.0, 1.5, 2.5, 3.5]), "costs": [1, 1, 1, 2, 2, 2], "tol": 0.05}
    mask = np.array([True] * 6)
    assert screen_and_score(["nope", "a"], data, mask) == {"reject": "invalid"}
    assert screen_and_score(["sub", "a", "a"], data, mask) == {"reject": "constant"}
    huge = ["mul", "a", ["inv", ["sub", "b", "b"]]]        # safe division: 1e12 * a, finite
    assert "fitness" in screen_and_score(huge, data, mask)
    for _ in range(5):                                       # squared past the float range
        huge = ["square", huge]
    assert screen_and_score(huge, data, mask) == {"reject": "non-finite"}
    ok = screen_and_score("a", data, mask)
    assert ok["fitness"][0] == pytest.approx(1.0)
    cands = ["a", ["mul", "a", "a"], "b", ["add", "b", "b"], "b"]
    stats: dict = {}
    trees, _ = _select(cands, [screen_and_score(c, data, mask) for c in cands], 10, set(), set(), stats)
    # a*a ranks the policies as a does, b+b as b does; the last b is the same tree
    assert trees == ["a", "b"] and stats == {"duplicate": 3}


def test_split_keeps_bands_whole():
    costs = [1, 1.01, 1.02, 2, 2.01, 2.02, 4, 4.01, 4.02, 8]
    mask = split_bands(costs, 0.05, 0.6, 3)
    for band in cost_bands(costs, 0.05)[:3]:
        assert len({bool(mask[i]) for i in band}) == 1
    assert 0 < mask.sum() < 9 and not mask[9]


def test_interrupted_evolution_resumes_to_the_straight_result(bench_db, tmp_path):
    path, _ = bench_db
    shutil.copy(path, tmp_path / "straight.db")
    shutil.copy(path, tmp_path / "resumed.db")
    straight, resumed = Store(f"sqlite:///{tmp_path / 'straight.db'}"), Store(f"sqlite:///{tmp_path / 'resumed.db'}")
    cfg = dict(bench="b", population=8, seed=1, workers=2, train_fraction=0.5)
    full = run_evolution(EvolveConfig(generations=3, **cfg), straight)
    part = run_evolution(EvolveConfig(generations=1, **cfg), resumed)       # "interrupted" after generation 1
    study = resumed.get_study("b")
    assert len(resumed.record_keys(study, f"evolve/{part['run']}/")) == 1
    again = run_evolution(EvolveConfig(generations=3, **cfg), resumed)
    assert again["expression"] == full["expression"] and again["train"] == full["train"]
    keys = straight.record_keys(straight.get_study("b"), "evolve/")
    assert keys == resumed.record_keys(study, "evolve/") and len(keys) == 3
    for k in keys:
        assert straight.load_record(straight.get_study("b"), k) == resumed.load_record(study, k)
    # Fitness never falls: the elites carry the best over.
    gens = [straight.load_record(straight.get_study("b"), k) for k in keys]
    bests = [max(map(tuple, g["fitness"])) for g in gens]
    assert bests == sorted(bests)
    assert -1 <= full["held_out"]["band_spearman"] <= 1 and set(full["hand_designed"]) >= {"hessian_trace", "fisher"}


def test_validation_bands_pick_the_result_from_the_last_generation(bench_db, tmp_path):
    path, _ = bench_db
    shutil.copy(path, tmp_path / "v.db")
    store = Store(f"sqlite:///{tmp_path / 'v.db'}")
    cfg = EvolveConfig(bench="b", generations=2, population=6, workers=2, train_fraction=0.5, validation=0.5)
    res = run_evolution(cfg, store)
    # 3 bands: one held out, one for the fitness, one to choose with
    assert res["train"]["policies"] == res["validation"]["policies"] == res["held_out"]["policies"] == 3
    last = store.load_record(store.get_study("b"), f"evolve/{res['run']}/0001")
    assert res["expression"] in last["population"]
    plain = run_evolution(EvolveConfig(bench="b", generations=2, population=6, workers=2, train_fraction=0.5), store)
    assert plain["validation"] is None and plain["run"] != res["run"]


def test_saved_evolved_proxy_scores_as_the_evolution_predicted(bench_db, tmp_path, digits, digits_layers):
    from autocomp.bands import spearman
    from autocomp.proxies import get_proxy
    from autocomp.search_spaces import load_space

    path, _ = bench_db
    store = Store(f"sqlite:///{path}")
    result = run_evolution(EvolveConfig(bench="b", generations=1, population=6, workers=2), store)
    out = save_evolved(result, "t", tmp_path / "t.json")
    proxy = get_proxy(f"evolved:{out}")
    sens = proxy.score(digits, digits_layers, load_space("mixed_precision"))
    bench = load_bench(store, "b")
    from autocomp.evolution import bench_data
    from autocomp.proxies.evolved import expression as ex

    data = bench_data(bench, load_space("mixed_precision"))
    pred = ex.evaluate(result["expression"], data["env"], data["layer"])[data["idx"]].sum(axis=1)
    mine = [sens.predict(p) for p in bench.policies]
    # The same primitives in one process as on Ray: the same prediction up to the shift to >= 0.
    shift = len(digits_layers) * float(np.min(ex.evaluate(result["expression"], data["env"], data["layer"])))
    assert np.allclose(np.asarray(mine) + shift, pred, rtol=1e-6, atol=1e-9)
    assert spearman(mine, pred) == pytest.approx(1.0)


def test_cli_bench_and_evolve(bench_db, tmp_path):
    path, _ = bench_db
    url = f"sqlite:///{path}"
    r = CliRunner().invoke(app, ["proxies", "bench", "--samples", str(SAMPLES), "--study", "b", "--db", url,
                                 "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "(0 evaluated now)" in r.output
    out = tmp_path / "cli.json"
    r = CliRunner().invoke(app, ["proxies", "evolve", "--bench", "b", "--db", url, "--generations", "1",
                                 "--population", "6", "--out", str(out), "--json", "--workers", "2"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{"):])
    assert json.loads(out.read_text())["expression"] == res["expression"] and res["path"] == str(out)
    for args, msg in ((["proxies", "evolve", "--bench", "nope", "--db", url], "no proxy bench 'nope'"),
                      (["proxies", "evolve", "--bench", "b", "--db", url, "--generations", "0"], "--generations"),
                      (["proxies", "bench", "--samples", "2", "--db", url], "--samples must be at least 4"),
                      (["proxies", "audit", "--band-tol", "2", "--db", url], "--band-tol")):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
