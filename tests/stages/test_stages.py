"""The stages run alone on what a study holds, compose to exactly run_search, and a library caller
whose search raises never leaves the study running."""
from __future__ import annotations

import textwrap

import pytest

from autocomp.budget import parse_budget
from autocomp.errors import AutocompError
from autocomp.report import front
from autocomp.search import SearchConfig, check_config, run_search
from autocomp.search_spaces import load_space
from autocomp.stages import (IncompleteRun, evaluate, load_context, plan_candidates, profile, record_profile,
                             save_candidates, score)
from autocomp.store import Store


def _front_key(points):
    return [(p["policy_id"], p["quality"], p["size"], p["on_front"]) for p in points]


def test_stages_by_hand_equal_run_search(ray_session, digits, tmp_path):
    cfg = SearchConfig(model="digits", points=3, proxy="fisher", workers=2, baselines=(4, 2))
    a = Store(f"sqlite:///{tmp_path / 'a.db'}")
    res = run_search(cfg, a, "s")
    assert res.study.status == "done" and res.evaluated_now > 0

    b = Store(f"sqlite:///{tmp_path / 'b.db'}")
    ctx = profile(digits, parse_budget(cfg.budget), load_space(cfg.space))
    study, _ = b.open_study("s", cfg.to_dict())
    record_profile(b, study, ctx)
    sens = score(b, study, ctx, "fisher", workers=2)
    pols = save_candidates(b, study, ctx, plan_candidates(ctx, sens, "ilp", 3, (4, 2)))
    done = evaluate(b, study, ctx.spec, ctx.cm, pols, workers=2)
    assert done.evaluated == len(pols) and done.skipped == 0
    assert _front_key(front(b, study)) == _front_key(res.front)

    # Each stage alone, from what the store holds: the context comes back equal, and the stages
    # find their work done (nothing re-scored, nothing re-evaluated).
    again = load_context(b, b.get_study("s"))
    assert again.layers == ctx.layers and again.limits == ctx.limits and again.space.to_dict() == ctx.space.to_dict()
    assert again.cm.costs(pols[0]) == ctx.cm.costs(pols[0])
    assert score(b, study, again, "fisher", workers=2) == sens
    assert evaluate(b, study, again.spec, again.cm, workers=2).evaluated == 0


def test_load_context_of_a_study_without_a_profile(sqlite_url):
    store = Store(sqlite_url)
    st, _ = store.open_study("empty", {})
    with pytest.raises(AutocompError, match="no stored profile"):
        load_context(store, st)


def test_a_failing_search_is_marked_not_left_running(ray_session, tmp_path):
    """A workload whose metric raises on compressed models: the evaluations fail, the study is
    ``incomplete`` (fp32 landed), and the message says how to resume."""
    wl = tmp_path / "wl.py"
    wl.write_text(textwrap.dedent('''
        from autocomp.workload import load_workload
        from autocomp.workloads.digits import digits

        def metric(model, batches):
            if any(h for m in model.modules() for h in m._forward_pre_hooks.values()):
                raise RuntimeError("no quantized models here")
            return 1.0

        def make():
            w = digits()
            w.metric = metric
            return w
    '''))
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    cfg = SearchConfig(model=f"{wl}:make", points=2, proxy="fisher", workers=2, baselines=(4,))
    with pytest.raises(IncompleteRun, match=r"evaluation\(s\) failed .*run `autocomp search --study s` again"):
        run_search(cfg, store, "s")
    st = store.get_study("s")
    assert st.status == "incomplete" and "failed" in st.config["status_reason"]
    assert len(store.list_evaluations(st)) == 1     # fp32 has no activation hooks: it landed


@pytest.mark.parametrize("change, msg", [
    (dict(workers=0), "--workers must be at least 1"),
    (dict(points=0), "--points must be at least 1"),
    (dict(refine=-1), "--refine must be 0 or more"),
    (dict(refine_mode="nope"), "unknown --refine-mode .nope."),
    (dict(budget="latency<=50%"), "needs measured latencies"),
])
def test_bad_options_fail_before_any_study_is_touched(tmp_path, change, msg):
    cfg = SearchConfig(**change)
    with pytest.raises(AutocompError, match=msg):
        check_config(cfg)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(AutocompError, match=msg):
        run_search(cfg, store, "s")
    assert store.get_study("s", missing_ok=True) is None
