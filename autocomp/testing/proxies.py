"""The proxy contract: ``score`` is ``combine`` of its own parts, on plain data, covering every
(layer, choice) of the space with finite values, with frozen, validated, JSON-able options, and
leaving the model as it found it.

Run it on a proxy of your own (registered with :func:`autocomp.proxies.register`)::

    from autocomp.testing import ProxyContract

    class TestMine(ProxyContract):
        proxy = "mine"                                # the registered name
        options = {"scale": 2.0}                      # what get_proxy builds it with
        bad_options = [({"scale": "x"}, "scale")]     # (options, part of the one-line error)

It scores the ``digits`` workload (``workload_spec``, any ``--model`` spec) on a small space with
activation bits, pruning and an ``@first`` override (``space``, a built-in name or a dict for
:func:`~autocomp.search_spaces.space_from_dict`). Promises a proxy does not make are switched
off per class: ``non_negative`` (sensitivities; default true), ``scores_non_negative`` (the
per-layer scores: a Hessian trace of a transformer, whose curvature is indefinite, can be
negative; default true), ``monotone_in_bits`` (fewer weight bits never predicted to hurt less;
default false).

Transformers: ``autocomp.testing.hf:tiny_gpt2`` and ``autocomp.testing.hf:tiny_bert`` are
workload specs of tiny Hugging Face models with the default (SDPA) attention; the model-state
check then also covers the attention implementation and PyTorch's SDPA kernel switches.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
from typing import Any, ClassVar

import pytest

from autocomp.errors import AutocompError
from autocomp.proxies import Part, Proxy, Sensitivity, get_proxy, list_proxies
from autocomp.search_spaces import load_space, space_from_dict
from autocomp.testing import _data

SPACE = {"name": "contract", "w_bits": [2, 8], "a_bits": [4, 8], "prune": [0.0, 0.5],
         "overrides": [{"match": "@first", "w_bits": [8], "prune": [0.0]}]}


def _model_state(model) -> tuple[dict, set, int, tuple]:
    """Weights (copied), the parameters holding a gradient, the number of hooks, and the
    attention settings (the model's attention implementation, PyTorch's SDPA kernel switches)."""
    import torch

    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    b = torch.backends.cuda
    attention = (getattr(getattr(model, "config", None), "_attn_implementation", None), b.flash_sdp_enabled(),
                 b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(), torch.is_grad_enabled(), model.training)
    return weights, grads, hooks, attention


class ProxyContract:
    """What every registered proxy guarantees. Subclasses set the class attributes below."""

    proxy: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    bad_options: ClassVar[list[tuple[dict[str, Any], str]]] = []
    workload_spec: ClassVar[str] = "digits"
    space: ClassVar[str | dict[str, Any]] = SPACE
    non_negative: ClassVar[bool] = True
    scores_non_negative: ClassVar[bool] = True
    monotone_in_bits: ClassVar[bool] = False

    @pytest.fixture(scope="class")
    @classmethod
    def problem(cls):
        """(workload, layers, space) the proxy scores."""
        space = load_space(cls.space) if isinstance(cls.space, str) else space_from_dict(cls.space)
        return _data.workload(cls.workload_spec), list(_data.layers(cls.workload_spec)), space

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, problem):
        """What a runner does: the parts in order up to the first prefix ``done`` accepts, their
        results, and ``combine`` of those; plus ``score`` in one call, for comparison."""
        wl, layers, space = problem
        before = _model_state(wl.model())
        p = get_proxy(cls.proxy, **cls.options)
        parts = p.parts(wl, layers, space)
        results: list[Any] = []
        for part in parts:
            results.append(p.score_part(wl, layers, space, part))
            if p.done(wl, layers, space, results):
                break
        combined = p.combine(wl, layers, space, results)
        direct = get_proxy(cls.proxy, **cls.options).score(wl, layers, space)
        return {"proxy": p, "parts": parts, "results": results, "combined": combined, "direct": direct,
                "before": before}

    # --- the contract ---------------------------------------------------------------------
    def test_registered_under_its_name(self, split):
        assert self.proxy in list_proxies()
        assert isinstance(split["proxy"], Proxy)
        assert isinstance(split["combined"], Sensitivity) and split["combined"].proxy == self.proxy

    def test_score_equals_combine_of_the_parts(self, split):
        assert split["combined"].omega == split["direct"].omega
        assert split["combined"].layer_scores == split["direct"].layer_scores

    def test_parts_and_results_are_plain_data(self, split):
        parts, results = split["parts"], split["results"]
        assert parts and all(isinstance(p, Part) for p in parts)
        assert all(Part.from_dict(json.loads(json.dumps(p.to_dict()))) == p for p in parts)
        assert json.loads(json.dumps(results)) == results       # as a Ray task returns it
        sens = split["combined"]
        assert Sensitivity.from_dict(json.loads(json.dumps(sens.to_dict()))) == sens   # as the store keeps it

    def test_covers_every_layer_and_choice_of_the_space(self, split, problem):
        _, layers, space = problem
        sens, choices = split["combined"], space.choices(layers)
        assert list(sens.omega) == [l.name for l in layers], "one row per layer, in the profile's order"
        for l in layers:
            assert set(sens.omega[l.name]) == {c.key for c in choices[l.name]}, l.name

    def test_scores_are_finite(self, split):
        sens = split["combined"]
        omega = [v for row in sens.omega.values() for v in row.values()]
        scores = list(sens.layer_scores.values())
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in omega + scores)
        if self.non_negative:
            assert min(omega) >= 0.0
        if self.scores_non_negative:
            assert min(scores) >= 0.0

    def test_fewer_bits_never_predicted_to_hurt_less(self, split, problem):
        if not self.monotone_in_bits:
            pytest.skip(f"{self.proxy} does not promise monotone scores")
        _, layers, space = problem
        sens = split["combined"]
        for l in layers:
            cs = space.choices(layers)[l.name]
            for lo in cs:
                for hi in cs:
                    if (lo.a_bits, lo.prune) == (hi.a_bits, hi.prune) and lo.w_bits < hi.w_bits:
                        assert sens.omega[l.name][lo.key] >= sens.omega[l.name][hi.key], (l.name, lo.key, hi.key)

    def test_leaves_the_model_as_it_was(self, split, problem):
        """No weight changed, no gradient kept, no hook left behind, attention and modes restored
        (workers reuse the model)."""
        (weights, grads, hooks, attention), after = split["before"], _model_state(problem[0].model())
        assert after[0].keys() == weights.keys() and all(v.equal(after[0][k]) for k, v in weights.items())
        assert after[1] <= grads, f"gradients left on {sorted(after[1] - grads)}"
        assert after[2] == hooks, "hooks left behind"
        assert after[3] == attention, "attention implementation, SDPA kernels or modes not restored"

    def test_config_is_frozen_json_and_rebuilds_the_proxy(self):
        proxy = get_proxy(self.proxy, **self.options)
        d = json.loads(json.dumps(proxy.config_dict()))          # stored with the study
        assert get_proxy(self.proxy, **d).config == proxy.config
        assert pickle.loads(pickle.dumps(proxy)).config == proxy.config
        for field in dataclasses.fields(proxy.config):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(proxy.config, field.name, getattr(proxy.config, field.name))

    def test_bad_options_fail_in_one_line_naming_the_proxy(self):
        for options, match in [({"no_such_option": 1}, "unknown option 'no_such_option'"), *self.bad_options]:
            with pytest.raises(AutocompError, match=match) as e:
                get_proxy(self.proxy, **options)
            assert str(e.value).startswith(f"proxy {self.proxy!r}: ") and "\n" not in str(e.value)
