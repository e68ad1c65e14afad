"""Optuna refinement: seeded by the allocator, stored in the study database, resumable.

One real search (local Ray, real actors, SQLite, CBC) with ``refine=4`` is shared by the tests;
the resume tests then drive :func:`autocomp.refine.refine` with an in-process PTQ evaluator (the
same code the actors run) to keep the suite fast.
"""
from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from autocomp.budget import CostModel, parse_budget
from autocomp.cli import app
from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.profile import model_param_count
from autocomp.refine import ParamSpace, make_sampler, open_optuna_study, refine
from autocomp.report import dominates, front, study_points
from autocomp.search import SearchConfig, run_search
from autocomp.search_spaces import load_space, space_from_dict
from autocomp.store import Store

CFG = SearchConfig(model="digits", budget="size<=25%", proxy="quant_mse", points=3, baselines=(8, 4),
                   refine=4, workers=2, seed=0)


@pytest.fixture(scope="module")
def refined(ray_session, tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('refine') / 'study.db'}")
    result = run_search(CFG, store, "r")
    return store, result


_EV: list = []


def _evaluate(policy: Policy):
    """The actors' ``ptq`` evaluator, in this process (one evaluator and workload, set up once)."""
    from autocomp.evaluators import get_evaluator
    from autocomp.workload import load_workload

    if not _EV:
        _EV.extend([get_evaluator("ptq"), load_workload("digits")])
    return _EV[0].evaluate(_EV[1], policy)


@pytest.fixture(scope="module")
def local_eval():
    """``evaluate_batch`` running the actors' evaluator in this process."""
    calls: list[str] = []

    def evaluate_batch(policies, on_result, on_error):
        for p in policies:
            calls.append(p.id)
            on_result(_evaluate(p))

    evaluate_batch.calls = calls
    return evaluate_batch


def _context(store: Store, name: str, digits):
    st = store.get_study(name)
    layers = store.load_layers(st)
    cm = CostModel(layers, total_params=model_param_count(digits.model()))
    return dict(store=store, study=st, spec="digits", layers=layers, space=load_space(CFG.space),
                budget=parse_budget(CFG.budget), cm=cm, workers=2, seed=CFG.seed)


def test_optuna_study_opens_from_the_database_url(refined):
    store, _ = refined
    # exactly what `optuna-dashboard <db-url>` does
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=store.url)]
    assert "r" in names
    study = optuna.load_study(study_name="r", storage=store.url)
    assert study.metric_names == ["accuracy", "size"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert open_optuna_study(store.url, "r").study_name == "r"
    with pytest.raises(AutocompError, match="no ptq refinement"):
        open_optuna_study(store.url, "nope")


def test_seeds_are_the_stored_policies_and_refined_ones_join_the_front(refined, digits):
    store, result = refined
    ctx = _context(store, "r", digits)
    st = ctx["study"]
    trials = optuna.load_study(study_name="r", storage=store.url).get_trials()
    seed_values = {t.user_attrs["policy_id"]: t.values for t in trials if t.user_attrs.get("role") == "seed"}
    pols = {p.policy_id: p for p in store.list_policies(st)}
    assert seed_values and all(pols[pid].source in ("ilp", "uniform") for pid in seed_values)
    assert any(pols[pid].source == "ilp" for pid in seed_values)
    evals = {e.policy_id: e for e in store.list_evaluations(st)}
    for pid, values in seed_values.items():  # told the stored result, not evaluated again
        assert values[0] == evals[pid].quality and values[1] == pytest.approx(evals[pid].size)
    refined_trials = [t for t in trials if t.user_attrs.get("role") == "refine" and t.state == TrialState.COMPLETE]
    assert len(refined_trials) == CFG.refine == result.refined
    opt = {pid: p for pid, p in pols.items() if p.source == "optuna"}
    assert {t.user_attrs["policy_id"] for t in refined_trials} == set(opt)
    for pid, p in opt.items():  # stored like every other policy, within the budget
        assert pid in evals and p.info["trial"] in {t.number for t in refined_trials}
        assert not ctx["cm"].violations(Policy.from_dict(p.policy), ctx["budget"])
    pts = {p["policy_id"]: p for p in study_points(store, st)}
    fr = front(store, st)
    on = {p["policy_id"] for p in fr if not p["baseline"]}
    for pid in opt:  # every refined point is on the front or dominated by one that is
        assert pid in on or any(dominates(pts[q], pts[pid], ["size"]) for q in on)
    assert [p["policy_id"] for p in result.front] == [p["policy_id"] for p in fr]


def test_rerun_resumes_without_new_work(refined, digits):
    store, _ = refined
    before = len(optuna.load_study(study_name="r", storage=store.url).trials)
    again = run_search(CFG, store, "r")
    assert again.evaluated_now == 0 and again.refined == 0
    assert len(optuna.load_study(study_name="r", storage=store.url).trials) == before
    assert sum(p.source == "optuna" for p in store.list_policies(store.get_study("r"))) == CFG.refine


def test_more_refinement_adds_exactly_the_difference(refined, digits, local_eval):
    store, _ = refined
    n0 = len(local_eval.calls)
    res = refine(**_context(store, "r", digits), n=CFG.refine + 2, evaluate_batch=local_eval)
    assert res.evaluated == 2 and res.done == CFG.refine + 2 and not res.failures
    assert len(local_eval.calls) - n0 == 2
    assert len(set(local_eval.calls)) == len(local_eval.calls)      # nothing evaluated twice
    assert sum(p.source == "optuna" for p in store.list_policies(store.get_study("r"))) == CFG.refine + 2


def test_trials_left_running_in_the_optuna_study_are_closed(refined, digits, local_eval):
    # autocomp writes only finished trials; RUNNING ones come from an older autocomp (which asked
    # in storage) or from another tool asking the study. They are closed with what the store holds.
    store, _ = refined
    ctx = _context(store, "r", digits)
    st, ps = ctx["study"], ParamSpace(ctx["layers"], ctx["space"])
    ostudy = optuna.load_study(study_name="r", storage=store.url)
    done = {t.user_attrs.get("policy_id") for t in ostudy.trials}
    fresh = []
    for b in (3, 6, 4):  # policies the study has not seen: first layer 8 bits, the rest uniform
        names = [l.name for l in ctx["layers"]]
        pol = Policy.from_choices([(n, Choice(8 if i == 0 else b, 8, 0.0)) for i, n in enumerate(names)])
        if pol.id not in done and not ctx["cm"].violations(pol, ctx["budget"]):
            fresh.append(pol)
    landed, lost = fresh[:2]
    running = []
    for pol in (landed, lost):
        ostudy.enqueue_trial(ps.params_of(pol), user_attrs={"policy_id": pol.id, "role": "refine"})
        running.append(ostudy.ask(ps.distributions))
    t1, t2 = running
    assert ps.policy_of(t1.params) == landed and ps.policy_of(t2.params) == lost
    costs = ctx["cm"].costs(landed)
    store.save_policy(st, landed, "optuna", "killed", costs)
    store.save_evaluation(st, _evaluate(landed).with_costs(costs))
    n0 = len(local_eval.calls)
    closed = refine(**ctx, n=0, evaluate_batch=local_eval)
    assert closed.recovered == 2 and len(local_eval.calls) == n0
    trials = {t.number: t for t in optuna.load_study(study_name="r", storage=store.url).trials}
    assert trials[t1.number].state == TrialState.COMPLETE             # told its stored result
    assert trials[t1.number].values[0] == store.list_evaluations(st)[-1].quality
    assert trials[t2.number].state == TrialState.FAIL
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    res = refine(**ctx, n=closed.done + 1, evaluate_batch=local_eval)
    assert res.evaluated == 1 and res.done == closed.done + 1
    assert landed.id not in local_eval.calls                           # never evaluated twice


def test_param_space_fixed_layers_ties_and_roundtrip(digits_layers):
    space = space_from_dict({"name": "t", "w_bits": [2, 4, 8], "a_bits": [8], "prune": [0.0, 0.5],
                             "overrides": [{"match": "@first", "w_bits": [8], "prune": [0.0]},
                                           {"match": "@last", "skip": True}],
                             "ties": [["features.10", "features.14"]]})
    ps = ParamSpace(digits_layers, space)
    names = [l.name for l in digits_layers]
    assert set(ps.fixed) == {names[0], names[-1]}
    assert ps.params["features.10"] == ["features.10", "features.14"] and "features.14" not in ps.params
    assert len(ps.distributions["features.3"].choices) == 6
    params = {p: d.choices[i % len(d.choices)] for i, (p, d) in enumerate(ps.distributions.items())}
    pol = ps.policy_of(params)
    assert pol["features.10"] == pol["features.14"] and pol[names[-1]] == Choice(32, 32, 0.0)
    assert ps.params_of(pol) == params
    untied = Policy.from_choices({**pol.as_dict(), "features.14": Choice(2, 8, 0.0) if pol["features.10"].w_bits != 2
                                  else Choice(4, 8, 0.0)})
    assert ps.params_of(untied) is None
    assert ps.params_of(Policy.uniform(names, Choice(3, 8, 0.0))) is None


def test_samplers_and_bad_options(sqlite_url):
    assert isinstance(make_sampler("auto", 0), optuna.samplers.NSGAIISampler)
    assert isinstance(make_sampler("auto", 0, mode="qat"), optuna.samplers.TPESampler)
    with pytest.raises(AutocompError, match="unknown sampler"):
        make_sampler("cmaes", 0)
    runner = CliRunner()
    for args, msg in ((["--refine", "-1"], "--refine must be"), (["--refine-mode", "bogus"], "unknown --refine-mode"),
                      (["--refine-mode", "nas"], "NAS runs with --trials nas"),
                      (["--refine", "2", "--refine-sampler", "grid"], "unknown --refine-sampler")):
        r = runner.invoke(app, ["search", "--db", sqlite_url, *args])
        assert r.exit_code == 2 and msg in r.output, r.output


def test_refine_on_every_storage(storage_url, digits, digits_layers, local_eval):
    """SQLite and a real PostgreSQL server: the Optuna study shares the study database."""
    store = Store(storage_url)
    budget = parse_budget(CFG.budget)
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    st, _ = store.open_study("pg", {"model": "digits", "budget_text": budget.describe()})
    store.save_layers(st, digits_layers)
    store.update_config(st, fp32={m: cm.fp32(m) for m in ("size", "bitops", "avg_bits")}, front_costs=budget.metrics)
    names = [l.name for l in digits_layers]
    seeds = [Policy.from_choices([(n, Choice(8 if i == 0 else b, 8, 0.0)) for i, n in enumerate(names)]) for b in (4, 6)]
    for pol in seeds:
        store.save_policy(st, pol, "ilp", "seed", cm.costs(pol))
        store.save_evaluation(st, _evaluate(pol).with_costs(cm.costs(pol)))
    ctx = dict(spec="digits", layers=digits_layers, space=load_space(CFG.space), budget=budget, cm=cm, workers=2)
    res = refine(store, st, n=2, evaluate_batch=local_eval, **ctx)
    assert res.evaluated == 2 and res.done == 2
    # the dashboard's view; PostgreSQL URLs name the psycopg 3 driver (psycopg2 is not required)
    url = storage_url.replace("postgresql://", "postgresql+psycopg://")
    trials = optuna.load_study(study_name="pg", storage=url).trials
    assert {t.user_attrs["policy_id"] for t in trials if t.user_attrs.get("role") == "seed"} == {p.id for p in seeds}
    assert sum(t.user_attrs.get("role") == "refine" and t.state == TrialState.COMPLETE for t in trials) == 2
    assert sum(p.source == "optuna" for p in store.list_policies(st)) == 2
    assert refine(store, st, n=2, evaluate_batch=local_eval, **ctx).evaluated == 0
    store.dispose()


def test_the_first_objective_follows_the_quality_metric(sqlite_url, digits, digits_layers, local_eval):
    """A lower-is-better quality is minimised; a stored study of the other direction is refused."""
    def as_loss(m):
        return replace(m, quality=1.0 - m.quality, quality_metric="loss")

    def evaluate_batch(policies, on_result, on_error):
        local_eval(policies, lambda m: on_result(as_loss(m)), on_error)

    store = Store(sqlite_url)
    budget = parse_budget(CFG.budget)
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    st, _ = store.open_study("loss", {"model": "digits", "budget_text": budget.describe()})
    store.save_layers(st, digits_layers)
    names = [l.name for l in digits_layers]
    seed = Policy.from_choices([(n, Choice(8 if i == 0 else 4, 8, 0.0)) for i, n in enumerate(names)])
    store.save_policy(st, seed, "ilp", "seed", cm.costs(seed))
    store.save_evaluation(st, as_loss(_evaluate(seed)).with_costs(cm.costs(seed)))
    ctx = dict(spec="digits", layers=digits_layers, space=load_space(CFG.space), budget=budget, cm=cm, workers=2)
    res = refine(store, st, n=2, quality="loss", evaluate_batch=evaluate_batch, **ctx)
    assert res.evaluated == 2
    ostudy = optuna.load_study(study_name="loss", storage=store.url)
    assert [d.name for d in ostudy.directions] == ["MINIMIZE", "MINIMIZE"]
    assert ostudy.metric_names == ["loss", "size"]
    seeded = next(t for t in ostudy.trials if t.user_attrs.get("role") == "seed")
    assert seeded.values[0] == store.list_evaluations(st)[0].quality                  # told the stored loss
    with pytest.raises(AutocompError, match="optimises minimize/minimize, this run maximize/minimize"):
        refine(store, st, n=3, evaluate_batch=local_eval, **ctx)                      # accuracy: maximised
    store.dispose()


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory, digits):
    """A searched study (no refinement yet) and the same study refined to 6 without interruption."""
    import sqlite3

    d = tmp_path_factory.mktemp("resume")
    base = d / "base.db"
    run_search(replace(CFG, refine=0), Store(f"sqlite:///{base}"), "r")
    ref = d / "ref.db"
    with sqlite3.connect(base) as src, sqlite3.connect(ref) as dst:   # WAL-safe copy
        src.backup(dst)
    a = Store(f"sqlite:///{ref}")
    full = refine(**_context(a, "r", digits), n=6, evaluate_batch=_local_batch([]))
    assert full.evaluated == 6
    return base, a


def _local_batch(calls):
    def evaluate_batch(policies, on_result, on_error):
        for p in policies:
            calls.append(p.id)
            on_result(_evaluate(p))
    return evaluate_batch


def _trials(store):
    return [(t.number, t.state, t.params, t.values, t.user_attrs.get("policy_id"), t.user_attrs.get("role"))
            for t in optuna.load_study(study_name="r", storage=store.url).trials]


def _evals(store):
    rows = store.list_evaluations(store.get_study("r"))
    assert len({e.policy_id for e in rows}) == len(rows)            # nothing evaluated twice
    return {e.policy_id: e.quality for e in rows}


@pytest.mark.parametrize("phase", ["ask", "evaluate", "write"])
def test_refinement_interrupted_anywhere_resumes_to_the_uninterrupted_result(phase, uninterrupted, tmp_path, digits,
                                                                             monkeypatch):
    """A controller stopped while batch 1 is asked, evaluated or written (Ctrl-C here; SIGKILL leaves
    the same state) resumes to exactly the Optuna history, evaluations and front of an uninterrupted
    run with the same seed."""
    import sqlite3

    import autocomp.refine as rf

    base, a = uninterrupted
    db = tmp_path / "b.db"
    with sqlite3.connect(base) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    b = Store(f"sqlite:///{db}")
    calls: list[str] = []
    batches: list[list[str]] = []

    def evaluate(policies, on_result, on_error):
        batches.append([p.id for p in policies])
        if phase == "evaluate" and len(batches) == 2:   # batch 1: one result lands, then the stop
            on_result(_evaluate(policies[0]))
            raise KeyboardInterrupt
        _local_batch(calls)(policies, on_result, on_error)

    real_sampler, real_add, real_ask = rf.make_sampler, optuna.Study.add_trials, optuna.Study.ask
    asks: list[int] = []     # asks since the last sampler was made, and which batch it serves

    def sampler(name, seed, population=16, mode="ptq"):
        asks[:] = [1 if seed == rf._batch_seed(CFG.seed, 1) else 0]
        return real_sampler(name, seed, population, mode)

    def ask(self, *args, **kw):
        asks.append(1)
        if phase == "ask" and asks[0] == 1 and len(asks) == 3:      # batch 1, second ask
            raise KeyboardInterrupt
        return real_ask(self, *args, **kw)

    def add_trials(self, trials):
        if phase == "write" and any(t.user_attrs.get("batch") == 1 for t in trials):
            real_add(self, trials[:1])                       # the first trial is written, then the stop
            raise KeyboardInterrupt
        return real_add(self, trials)

    monkeypatch.setattr(rf, "make_sampler", sampler)
    monkeypatch.setattr(optuna.Study, "add_trials", add_trials)
    monkeypatch.setattr(optuna.Study, "ask", ask)
    with pytest.raises(KeyboardInterrupt):
        refine(**_context(b, "r", digits), n=6, evaluate_batch=evaluate)
    monkeypatch.undo()
    stored = optuna.load_study(study_name="r", storage=b.url).trials
    assert not any(t.state == TrialState.RUNNING for t in stored)   # only finished trials are written
    assert {t.user_attrs.get("batch") for t in stored} == ({0, 1} if phase == "write" else {0})

    n0 = len(calls)
    resumed = refine(**_context(b, "r", digits), n=6, evaluate_batch=_local_batch(calls))
    assert resumed.done == 6
    if phase == "evaluate":
        assert batches[1][0] not in calls[n0:] and resumed.recovered == 1   # the landed one is not redone
    if phase == "write":
        assert set(calls[n0:]).isdisjoint(batches[1])             # batch 1 was evaluated before the stop
    assert _trials(b) == _trials(a)                                 # the same Optuna history, trial for trial
    assert _evals(b) == _evals(a)
    strip = lambda pts: [(p["policy_id"], p["accuracy"], p["size"], p["source"]) for p in pts]  # noqa: E731
    assert strip(front(b, b.get_study("r"))) == strip(front(a, a.get_study("r")))
