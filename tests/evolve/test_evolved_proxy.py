"""``evolved:NAME``: a saved JSON expression is a proxy like any other (the contract suite)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autocomp.errors import AutocompError
from autocomp.proxies import get_proxy, list_proxies
from autocomp.proxies.evolved import expression as ex
from autocomp.proxies.evolved import load_expression, register_evolved, save_expression
from autocomp.testing import ProxyContract

CONTRACT = Path(__file__).resolve().parent / "data" / "contract.json"


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """Listed while this module runs (the contract checks the name is listed), then dropped."""
    from autocomp.proxies._base import _REGISTRY

    name = register_evolved(str(CONTRACT))
    yield
    _REGISTRY.unregister(name)


class TestEvolvedContract(ProxyContract):
    proxy = f"evolved:{CONTRACT}"
    options = {"hessian_probes": 4}
    bad_options = [({"hessian_probes": 0}, "hessian_probes"), ({"probes": 3}, "probes")]


def test_expression_ops_text_and_canonical_form():
    env = {"a": np.array([1.0, 4.0, 9.0, 16.0]), "b": np.array([2.0, 2.0, 1.0, 1.0])}
    layer = np.array([0, 0, 1, 1])
    assert ex.evaluate(["lmax", "a"], env, layer).tolist() == [4.0, 4.0, 16.0, 16.0]
    assert ex.evaluate(["lmean", ["sqrt", "a"]], env, layer).tolist() == [1.5, 1.5, 3.5, 3.5]
    assert ex.evaluate(["rank", ["neg", "a"]], env, layer).tolist() == [1.0, 2 / 3, 1 / 3, 0.0]
    assert ex.canonical(["add", "a", ["mul", "b", "a"]]) == ex.canonical(["add", ["mul", "a", "b"], "a"])
    assert ex.canonical(["sub", "a", "b"]) != ex.canonical(["sub", "b", "a"])
    assert ex.text(["div", ["add", "a", "b"], ["max", "a", "b"]]) == "(a + b) / max(a, b)"
    for bad, msg in ((["nope", "a"], "unknown operation"), (["add", "a"], "takes 2"), ("c", "unknown primitive")):
        with pytest.raises(ex.InvalidExpression, match=msg):
            ex.check(bad, ["a", "b"])


def test_mutation_and_crossover_stay_well_formed():
    import random

    rng = random.Random(0)
    prims = ["a", "b", "c"]
    trees = [ex.grow(rng, prims, 3) for _ in range(30)]
    for i in range(200):
        a, b = trees[i % 30], trees[(i * 7) % 30]
        t = ex.mutate(a, rng, prims, 5) if i % 2 else ex.crossover(a, b, rng, 5)
        ex.check(t, prims)
        assert ex.depth(t) <= 6


def test_saved_file_round_trips_and_bad_files_are_one_line(tmp_path):
    path = save_expression({"name": "x", "expression": ["mul", "hessian", "perturb"]}, tmp_path / "x.json")
    data = json.loads(path.read_text())
    assert data["text"] == "hessian * perturb" and data["primitives"] == ["hessian", "perturb"]
    assert load_expression(str(path))["expression"] == ["mul", "hessian", "perturb"]
    assert get_proxy(f"evolved:{path}").name == f"evolved:{path}"   # resolved without registering
    assert f"evolved:{path}" not in list_proxies()
    (tmp_path / "bad.json").write_text(json.dumps({"version": 1, "expression": ["mul", "hessian", "nope"]}))
    for ref, msg in ((str(tmp_path / "bad.json"), "unknown primitive 'nope'"), ("missing-one", "no file")):
        with pytest.raises(AutocompError, match=msg) as e:
            get_proxy(f"evolved:{ref}")
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["digits", "tiny-lm"])
def test_the_shipped_expressions_build(name):
    from autocomp.proxies.evolved import saved_names
    from autocomp.proxies.evolved.primitives import sources_for

    proxy = get_proxy(f"evolved:{name}")
    assert proxy.name == f"evolved:{name}" and proxy.record["name"] == name
    assert f"evolved:{name}" in saved_names()
    assert set(ex.leaves(proxy.expression)) <= set(proxy.record["primitives"])
    parts = [p.kind for p in proxy.parts(None, [], None)]
    assert parts.count("source") == len(sources_for(ex.leaves(proxy.expression))) >= 1
    held = proxy.record["held_out"]
    assert -1 <= held["band_spearman"] <= 1 and held["policies"] >= 3 * held["bands"] > 0
