"""Interactions and repair on digits (real Ray, real SQLite, real HiGHS): probes measured against
the float reference and kept out of the front, pairwise allocations, a resumable measurement, a
repair that only accepts measured improvements within the budget; and the pair plan's rules."""
from __future__ import annotations

import pytest

from autocomp.errors import AutocompError
from autocomp.interactions import Interactions, aggressiveness, interactions_key, plan_pairs, probe
from autocomp.policy import FLOAT_CHOICE, Policy
from autocomp.report import front
from autocomp.search import SearchConfig, run_search
from autocomp.search_spaces import space_from_dict
from autocomp.sensitivity import Sensitivity
from autocomp.stages import load_context
from autocomp.stages.evaluate import evaluate
from autocomp.stages.interactions import KIND, measure_interactions, plan, probes
from autocomp.stages.repair import neighbours
from autocomp.store import Store

CFG = dict(model="digits", proxy="fisher", workers=2, points=4, interactions=2, repair=3)


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('inter') / 'i.db'}")
    return store, run_search(SearchConfig(**CFG), store, "i")


def _ctx_sens(store):
    st = store.get_study("i")
    return st, load_context(store, st), store.load_sensitivity(st, "fisher")


def test_probes_are_measured_against_the_float_reference(searched):
    store, _ = searched
    st, ctx, sens = _ctx_sens(store)
    it = store.load_interactions(st, interactions_key("fisher", 2, 2))
    assert it is not None and it.pairs
    q = {e.policy_id: e.quality for e in store.list_evaluations(st, kind=KIND)}
    names = ctx.names
    assert it.reference == q[Policy.uniform(names, FLOAT_CHOICE).id]
    for (a, b), row in it.pairs.items():
        for (ka, kb), v in row.items():
            ca, cb = (next(c for c in it_choices if c.key == k) for it_choices, k in
                      ((ctx.space.choices(list(ctx.layers))[a], ka), (ctx.space.choices(list(ctx.layers))[b], kb)))
            assert q[probe(names, {a: ca, b: cb}).id] == v
            term = it.terms()[(a, b)][(ka, kb)]
            assert term == pytest.approx(it.drop(v) - it.drop(it.singles[a][ka]) - it.drop(it.singles[b][kb]))
    # Probes (the float reference aside: it is also the fp32 baseline) stay out of the front
    # and out of the study's candidate policies.
    ref, *rest = probes(ctx, plan(ctx, sens, 2))
    assert len(q) == 1 + len(rest) and ref.id in q
    ids = {p.id for p in rest}
    assert not ids & {p["policy_id"] for p in front(store, st)}
    assert not ids & {p.policy_id for p in store.list_policies(st)}


def test_allocations_minimise_omega_plus_the_measured_terms(searched):
    store, _ = searched
    st, ctx, sens = _ctx_sens(store)
    pairwise = store.load_interactions(st, interactions_key("fisher", 2, 2)).pairwise(sens)
    ilp = [p for p in store.list_policies(st) if p.source == "ilp"]
    assert ilp
    for p in ilp:
        pol = Policy.from_dict(p.policy).as_dict()
        extra = sum(row.get((pol[a].key, pol[b].key), 0.0) for (a, b), row in pairwise.items())
        assert p.info["objective"] == pytest.approx(sens.predict(Policy.from_dict(p.policy)) + extra, abs=1e-9)


def test_repair_accepts_only_measured_improvements_within_the_budget(searched):
    store, res = searched
    st, ctx, _ = _ctx_sens(store)
    rr = st.config["repair_result"]
    assert rr["evaluated"] <= CFG["repair"] and rr["measured"] >= rr["evaluated"]
    assert rr["final_quality"] >= rr["start_quality"]
    q = {e.policy_id: e.quality for e in store.list_evaluations(st)}
    pols = {p.policy_id: p for p in store.list_policies(st)}
    for step in rr["steps"]:
        assert q[step["to"]] > q[step["from"]]
        origin = Policy.from_dict(pols[step["from"]].policy)
        assert step["to"] in {n.id for n in neighbours(ctx, origin)}
    repaired = [p for p in pols.values() if p.source == "repair"]
    assert len(repaired) >= rr["evaluated"]
    for p in repaired:
        pol = Policy.from_dict(p.policy)
        assert not ctx.cm.violations(pol, ctx.limits) and p.policy_id in q
        origin = Policy.from_dict(pols[p.info["from"]].policy).as_dict()
        assert sum(1 for n, c in pol.layers if origin[n] != c) == 1   # one layer moved


def test_rerun_evaluates_nothing(searched):
    store, res = searched
    again = run_search(SearchConfig(**CFG), store, "i")
    assert again.evaluated_now == 0
    now, before = store.get_study("i").config["repair_result"], res.study.config["repair_result"]
    assert now["evaluated"] == 0 and {**now, "evaluated": before["evaluated"]} == before   # the same moves
    assert {p["policy_id"] for p in again.front} == {p["policy_id"] for p in res.front}


def test_interrupted_measurement_evaluates_only_the_missing_probes(searched, ray_session):
    store, _ = searched
    st, ctx, sens = _ctx_sens(store)
    other, _ = store.open_study("resume", dict(st.config))
    store.save_layers(other, list(ctx.layers))
    todo = probes(ctx, plan(ctx, sens, 1))
    first = evaluate(store, other, ctx.spec, ctx.cm, todo[:3], kind=KIND, workers=2)   # then "interrupted"
    assert first.evaluated == 3 and store.load_interactions(other, interactions_key("fisher", 1, 2)) is None
    ticks = []
    it = measure_interactions(store, other, ctx, sens, 1, workers=2, on_progress=ticks.append)
    assert sum(ticks) == len(todo) - 3
    assert store.load_interactions(other, it.key) == it
    assert measure_interactions(store, other, ctx, sens, 1, workers=2) == it      # stored: nothing to do


# ---- the plan and the value (no Ray) ----------------------------------------------------------
def test_plan_takes_the_top_k_their_pairs_and_neighbours(digits_layers):
    layers = sorted(digits_layers, key=lambda l: l.index)
    names = [l.name for l in layers]
    space = space_from_dict({"w_bits": [2, 3, 4, 8]})
    choices = space.choices(layers)
    factor = {n: float(i + 1) for i, n in enumerate(reversed(names))}      # the first layer most sensitive
    sens = Sensitivity("t", {n: {c.key: factor[n] / c.w_bits for c in choices[n]} for n in names})
    p = plan_pairs(layers, sens, choices, [], k=2)
    top = names[:2]
    want = {(names[0], names[1]), (names[1], names[2])}
    assert set(p.pairs) == want
    assert all(set(n) <= set(names) for n in p.pairs)
    assert {c.key for c in p.choices[names[0]]} == {"w2a8", "w3a8"}   # the two lowest-bit choices
    assert all(len(cps) == 4 for cps in p.pairs.values())
    assert p.evaluations == 2 * len(p.choices) + 4 * len(want)
    assert set(top) <= set(p.choices)
    tied = plan_pairs(layers, sens, choices, [[names[0], names[1]]], k=2)
    assert all(ca == cb for ca, cb in tied.pairs[(names[0], names[1])])
    assert plan_pairs(layers, sens, choices, [], k=0).pairs == {}


def test_scale_and_prediction_follow_the_measured_singles():
    sens = Sensitivity("t", {"a": {"w2a8": 1.0, "w8a8": 0.0}, "b": {"w2a8": 2.0, "w8a8": 0.0}})
    it = Interactions("t", 2, 1, "accuracy", 1.0, {"a": {"w2a8": 0.9}, "b": {"w2a8": 0.8}},
                      {("a", "b"): {("w2a8", "w2a8"): 0.5}})
    assert it.scale(sens) == pytest.approx(0.1)                # drops 0.1 and 0.2 for omegas 1 and 2
    assert it.terms()[("a", "b")][("w2a8", "w2a8")] == pytest.approx(0.2)
    assert it.pairwise(sens)[("a", "b")][("w2a8", "w2a8")] == pytest.approx(2.0)
    both = Policy.from_choices([("a", FLOAT_CHOICE.__class__(2, 8)), ("b", FLOAT_CHOICE.__class__(2, 8))])
    assert it.predict(sens, both, pairwise=False) == pytest.approx(0.3)
    assert it.predict(sens, both) == pytest.approx(0.5)          # the measured joint drop
    perplexity = Interactions("t", 1, 1, "perplexity", 10.0, {"a": {"w2a8": 12.0}}, {})
    assert perplexity.drop(12.0) == 2.0
    with pytest.raises(AutocompError, match="does not rise"):
        Interactions("t", 1, 1, "accuracy", 1.0, {"a": {"w2a8": 1.0}}, {}).scale(sens)
    assert sorted([FLOAT_CHOICE.__class__(8, 8), FLOAT_CHOICE.__class__(2, 8)], key=aggressiveness)[0].w_bits == 2
