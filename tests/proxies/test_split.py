"""Proxies plan their own split. The proxy contract (:mod:`autocomp.testing.proxies`: ``score`` ==
``combine`` of the parts, plain data, full coverage, validated frozen options) on every built-in
proxy and on a user's proxy registered from outside; then the split on Ray workers, adaptive
stopping, and the proxy base class."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import pytest

from autocomp.errors import AutocompError
from autocomp.proxies import Part, Proxy, Sensitivity, get_proxy, list_proxies, register
from autocomp.proxies import _base
from autocomp.search_spaces import load_space
from autocomp.testing import ProxyContract
from autocomp.workers.proxy_tasks import score_on_ray


class TestFisher(ProxyContract):
    proxy = "fisher"
    monotone_in_bits = True


class TestGradNorm(ProxyContract):
    proxy = "grad_norm"
    monotone_in_bits = True


class TestHessianEig(ProxyContract):
    proxy = "hessian_eig"
    options = {"max_iter": 3}
    monotone_in_bits = True
    bad_options = [({"eigs": {}}, "unknown option 'eigs'"),             # no precomputed results
                   ({"max_iter": -1}, "max_iter must be at least 1")]


class TestHessianTrace(ProxyContract):
    proxy = "hessian_trace"
    options = {"max_probes": 3, "min_probes": 3}
    monotone_in_bits = True
    bad_options = [({"max_probes": 0}, "max_probes must be at least 1, got 0"),
                   ({"estimator": "newton"}, "unknown estimator 'newton'"),
                   ({"traces": {"fc": 1.0}}, "unknown option 'traces'"),
                   ({"max_probes": "8"}, "max_probes='8' is not an integer"),
                   ({"tol": True}, "tol=True is not a finite number")]


class TestLossDelta(ProxyContract):
    proxy = "loss_delta"
    monotone_in_bits = True
    bad_options = [({"groups": 0}, "groups must be at least 1")]


class TestLRP(ProxyContract):
    proxy = "lrp"
    monotone_in_bits = True
    bad_options = [({"rule": "alpha"}, "unknown rule 'alpha'"), ({"scores": {}}, "unknown option 'scores'")]


class TestQuantMSE(ProxyContract):
    proxy = "quant_mse"
    monotone_in_bits = True
    bad_options = [({"chunk": 1}, r"unknown option 'chunk' \(options: quantizer\)")]


class TestSnip(ProxyContract):
    proxy = "snip"
    monotone_in_bits = True
    bad_options = [({"chunk": 0}, "chunk must be at least 1")]


class TestSynflow(ProxyContract):
    proxy = "synflow"
    monotone_in_bits = True


# A user's proxy, split by calibration batch, registered without editing any autocomp file.
# The runner ships the proxy object to the workers: a class in an importable module travels by
# reference (a local Ray gets the controller's cwd and sys.path, see ensure_ray), one in a script
# by value. pytest's importlib mode names this file ``proxies.test_split``, which a worker cannot
# import (``proxies`` there is the source folder), so the Ray test ships it by value, as for a script.
COMBINED: list[list[dict]] = []


class InputScale(Proxy):
    """Mean |x| of the calibration inputs, one part per batch, times the choice's weight bits gap."""

    name = "input_scale"

    @dataclass(frozen=True)
    class Options:
        scale: float = 1.0

    def parts(self, workload, layers, space):
        return [Part("batch", batch=b) for b in range(len(workload.calib))]

    def score_part(self, workload, layers, space, part):
        x, y = workload.calib[part.batch]
        return {"mean": float(x.abs().mean()), "n": int(y.shape[0]), "pid": os.getpid()}

    def combine(self, workload, layers, space, results):
        COMBINED.append(list(results))
        m = self.config.scale * sum(r["mean"] * r["n"] for r in results) / sum(r["n"] for r in results)
        omega = {n: {c.key: m * (32 - c.w_bits) for c in cs} for n, cs in space.choices(layers).items()}
        return Sensitivity(self.name, omega, {n: m for n in omega})


@pytest.fixture(scope="class")
def input_scale_registered():
    """``input_scale`` registered for the tests that ask for it only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_base, "_REGISTRY", _base._REGISTRY.copy())
        register("input_scale", InputScale)
        yield


@pytest.mark.usefixtures("input_scale_registered")
class TestUserProxy(ProxyContract):
    """A proxy registered from outside autocomp runs the same suite."""

    proxy = "input_scale"
    options = {"scale": 2.0}
    monotone_in_bits = True
    bad_options = [({"scale": "x"}, "scale='x' is not a finite number")]


BUILT_IN = [c for c in list(globals().values())
            if isinstance(c, type) and issubclass(c, ProxyContract) and c not in (ProxyContract, TestUserProxy)]


def test_every_built_in_proxy_runs_the_contract():
    assert sorted(c.proxy for c in BUILT_IN) == list_proxies()


@pytest.mark.parametrize("name, options, message", [(c.proxy, o, m) for c in BUILT_IN for o, m in c.bad_options])
def test_bad_options_fail_before_any_ray_work(name, options, message):
    with pytest.raises(AutocompError, match=message):
        score_on_ray("digits", name, [], load_space("w4a8"), options)


def test_adaptive_parts_stop_where_the_serial_rule_stops(digits, digits_layers):
    one_batch = dataclasses.replace(digits, calib=digits.calib[:1], _model=digits.model())
    space = load_space("w4a8")
    proxy = get_proxy("hessian_trace", max_probes=12, min_probes=3, tol=0.5, probe_chunk=2)
    parts = proxy.parts(one_batch, digits_layers, space)
    assert [p.probes for p in parts] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)]
    results = [proxy.score_part(one_batch, digits_layers, space, p) for p in parts]
    first = next(k for k in range(1, len(results) + 1) if proxy.done(one_batch, digits_layers, space, results[:k]))
    assert first < len(parts)                                     # a loose tol stops early
    direct = proxy.score(one_batch, digits_layers, space)
    # Parts past the stop change nothing: N workers may have computed a few more.
    for k in (first, len(results)):
        assert proxy.combine(one_batch, digits_layers, space, results[:k]).omega == direct.omega


@pytest.fixture
def by_value():
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_users_proxy_splits_by_batch_on_ray(ray_session, by_value, input_scale_registered, digits, digits_layers):
    space = load_space("w4a8")
    local = get_proxy("input_scale", scale=2).score(digits, digits_layers, space)
    COMBINED.clear()
    one = score_on_ray("digits", "input_scale", digits_layers, space, {"scale": 2}, workers=1)
    two = score_on_ray("digits", "input_scale", digits_layers, space, {"scale": 2}, workers=2)
    assert one.omega == two.omega == local.omega and one.proxy == "input_scale"
    assert [len(rs) for rs in COMBINED] == [len(digits.calib)] * 2
    assert all(r["pid"] != os.getpid() for rs in COMBINED for r in rs)   # parts ran in Ray workers


def test_ints_are_accepted_as_floats_and_the_defaults_are_todays():
    p = get_proxy("hessian_trace", tol=1)
    assert p.config.tol == 1.0 and isinstance(p.config.tol, float)
    assert get_proxy("hessian_trace").config_dict() == {"tol": 1e-2, "max_probes": 32, "min_probes": 8,
                                                        "estimator": "auto", "seed": 0, "probe_chunk": 4,
                                                        "quantizer": "rtn"}
    assert get_proxy("lrp").config_dict() == {"rule": "epsilon", "eps": 1e-6, "gamma": 0.25}


def test_a_proxy_must_implement_score_or_the_split():
    class Nothing(Proxy):
        name = "nothing"

    with pytest.raises(TypeError, match="implement score, or parts"):
        Nothing()


def test_sensitivity_is_a_versioned_value_reexported_by_proxies():
    import autocomp.sensitivity

    assert Sensitivity is autocomp.sensitivity.Sensitivity
    s = Sensitivity("x", {"a": {"w8a8": 1.0}}, {"a": 2.0})
    assert Sensitivity.from_dict(s.to_dict()) == s
    with pytest.raises(AutocompError, match="Sensitivity version 2 "):
        Sensitivity.from_dict({**s.to_dict(), "version": 2})
