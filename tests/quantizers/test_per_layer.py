"""The per-layer quantizer (``w4a8@gptq``): each layer quantized exactly as its named quantizer
does alone, statistics collected once for the union of their needs, in the evaluator and the
proxies; the quantizer dimension of a search space (``quantizer: [rtn, gptq]``)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from autocomp.errors import AutocompError, SearchSpaceError
from autocomp.evaluators import get_evaluator
from autocomp.modules import activation_layers
from autocomp.policy import Choice, Policy
from autocomp.proxies._perturb import Perturber, is_default
from autocomp.quantizers import collect_stats, get_quantizer
from autocomp.quantizers.per_layer import PerLayerQuantizer, ensure_stats, for_policy
from autocomp.search_spaces import space_from_dict


def _names(digits) -> list[str]:
    return [n for n, _ in activation_layers(digits.model())]


def _mixed(names: list[str], named: str | None, other: str | None, choice: Choice = Choice(3, 32)) -> Policy:
    """Every other layer names ``named``, the rest ``other`` (None: the default quantizer)."""
    return Policy.from_choices({n: dataclasses.replace(choice, quantizer=named if i % 2 else other)
                                for i, n in enumerate(names)})


@pytest.mark.parametrize("default", ["rtn", "gptq"])
def test_mixed_policy_quantizes_each_layer_as_its_quantizer_alone(digits, default):
    model = digits.model()
    names = _names(digits)
    stats = collect_stats(model, digits.calib, names, {"hessian"})
    alone = {q: dict(get_quantizer(q).apply(model, Policy.uniform(names, Choice(3, 32)), stats=stats).named_modules())
             for q in ("rtn", "gptq")}
    other = "gptq" if default == "rtn" else "rtn"
    pol = _mixed(names, other, None)
    q = for_policy(get_quantizer(default), pol)
    assert isinstance(q, PerLayerQuantizer) and q.needs == frozenset({"hessian"})
    mods = dict(q.apply(model, pol, stats=stats).named_modules())
    differ = 0
    for i, n in enumerate(names):
        want = alone[other if i % 2 else default][n].weight
        assert torch.equal(mods[n].weight, want), n
        differ += not torch.equal(alone["rtn"][n].weight, alone["gptq"][n].weight)
    assert differ == len(names)     # so the comparison tells the two quantizers apart


def test_plain_policy_keeps_the_default_and_unknown_names_fail(digits):
    names = _names(digits)
    rtn = get_quantizer("rtn")
    assert for_policy(rtn, Policy.uniform(names, Choice(4, 8))) is rtn
    q = PerLayerQuantizer(default="rtn", quantizers=("gptq",))
    with pytest.raises(AutocompError, match="'awq'"):
        q.quantizer_for(Choice(4, 8, quantizer="awq"))
    assert get_quantizer(q.spec).spec == q.spec       # the spec reads back as the same quantizer


def test_evaluator_collects_missing_statistics_once(digits):
    model = digits.model()
    names = _names(digits)
    ev = get_evaluator("ptq")
    pol = _mixed(names, "gptq", None, Choice(3, 8))
    got = ev.evaluate(digits, pol).quality
    first = {n: ev._stats[n].hessian for n in names}
    again = ev.evaluate(digits, _mixed(names, "gptq", None, Choice(4, 8))).quality
    assert all(ev._stats[n].hessian is first[n] for n in names)   # not collected a second time
    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.evaluators.ptq import ACT_BITS

    ranges = activation_ranges(activation_stats(model, names, digits.calib), ACT_BITS)
    stats = collect_stats(model, digits.calib, names, {"hessian"})
    q = PerLayerQuantizer(default="rtn", quantizers=("gptq",))
    assert got == digits.evaluate(q.apply(model, pol, ranges, stats))
    plain = ev.evaluate(digits, _mixed(names, None, None, Choice(3, 8))).quality
    assert got != plain and again > 0


def test_ensure_stats_adds_only_what_is_missing(digits):
    model = digits.model()
    names = _names(digits)[:2]
    st, have = {}, set()
    ensure_stats(st, have, model, digits.calib, names, {"mean"})
    mean = st[names[0]].mean
    ensure_stats(st, have, model, digits.calib, names, {"mean", "hessian"})
    assert st[names[0]].mean is mean and st[names[0]].hessian is not None and have == {"mean", "hessian"}


def test_proxy_scores_each_choice_with_its_quantizer(digits):
    model = digits.model()
    names = _names(digits)
    space = space_from_dict({"w_bits": [3], "a_bits": [32], "quantizer": ["rtn", "gptq"]})
    assert not is_default("rtn", space) and is_default("rtn", space_from_dict({"w_bits": [3]}))
    cs = [Choice(3, 32, quantizer="rtn"), Choice(3, 32, quantizer="gptq")]
    p = Perturber("rtn", model, names, digits.calib, choices=cs)
    assert p.weighted     # gptq shapes its error by the inputs: every choice is weighed by them
    gp = Perturber("gptq", model, names, digits.calib)
    rt = Perturber("rtn", model, names, digits.calib, choices=[Choice(3, 32, quantizer="gptq")])
    mods = dict(model.named_modules())
    for n in names:
        norms = p.norms(n, mods[n], cs)
        assert norms["w3a32@gptq"] == pytest.approx(gp.norms(n, mods[n], [Choice(3, 32)])["w3a32"], rel=1e-9)
        assert norms["w3a32@rtn"] == pytest.approx(rt.norms(n, mods[n], [Choice(3, 32)])["w3a32"], rel=1e-9)
        # GPTQ minimises exactly this input-weighted error: it is the smaller one on every layer
        assert norms["w3a32@gptq"] < norms["w3a32@rtn"], n


def test_space_quantizer_dimension():
    sp = space_from_dict({"w_bits": [4, 32], "a_bits": [8], "quantizer": ["default", "gptq"],
                          "overrides": [{"match": "x", "quantizer": ["awq"]}]})
    keys = [c.key for c in sp._base()]
    assert keys == ["w4a8", "w4a8@gptq", "w32a8"]      # float weights take no quantizer
    assert sp.quantizers() == ["awq", "gptq"]
    assert space_from_dict(sp.to_dict()).quantizers() == ["awq", "gptq"]
    with pytest.raises(SearchSpaceError, match="quantizer"):
        space_from_dict({"w_bits": [4], "quantizer": ["gp tq"]})


def test_digits_search_with_a_quantizer_dimension(ray_session, tmp_path, digits):
    """``quantizer: [rtn, gptq]`` end to end: the proxy scores each choice with its quantizer, the
    allocator picks per layer, the stored policies name both, stored qualities are gptq's where
    a layer says so."""
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store

    space = tmp_path / "q.yaml"
    space.write_text("name: q\nw_bits: [2, 4, 8]\na_bits: [8]\nquantizer: [rtn, gptq]\n")
    store = Store(f"sqlite:///{tmp_path / 'q.db'}")
    run_search(SearchConfig(model="digits", space=str(space), budget="size<=12%", points=2, proxy="quant_mse",
                            workers=2, baselines=(4,)), store, "q")
    study = store.get_study("q")
    pols = {p.policy_id: Policy.from_dict(p.policy) for p in store.list_policies(study)}
    evals = {e.policy_id: e.quality for e in store.list_evaluations(study)}
    named = {pid: {c.quantizer for _, c in pol.layers if c.w_bits < 32} for pid, pol in pols.items()}
    assert set().union(*named.values()) == {"rtn", "gptq"}, named
    assert all(pid in evals for pid in pols)
    pid = next(p for p, q in named.items() if "gptq" in q)
    here = get_evaluator("ptq").evaluate(digits, pols[pid]).quality
    rtn = get_evaluator("ptq").evaluate(digits, Policy.from_choices(
        [(n, dataclasses.replace(c, quantizer=None)) for n, c in pols[pid].layers])).quality
    # within a few test images of this process's gptq (another thread count rounds the Hessian
    # differently); the same choices all by rtn score otherwise
    assert abs(evals[pid] - here) <= 0.01 and here != rtn, (evals[pid], here, rtn)
    store.dispose()
