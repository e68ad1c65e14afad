"""``--trials qat``: the best policies of the PTQ front fine-tuned as Ray Tune trials (real QAT on
digits, one epoch), stored beside their PTQ evaluations, merged into the front, resumed."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.report import front
from autocomp.store import Store
from autocomp.trial_options import qat_options, trial_kind
from autocomp.trials import pending_trials, qat_trials, top_policies

from ._trials import make_study

runner = CliRunner()


def test_top_k_trials_stored_beside_ptq_merged_into_the_front_and_resumed(ray_session, sqlite_url, digits, tmp_path):
    store = Store(sqlite_url)
    st, ctx, pols = make_study(store, "q", digits)
    ptq_before = {e.policy_id: e.quality for e in store.list_evaluations(st)}
    ptq_front = front(store, st, kind="ptq")
    opts = qat_options({"epochs": 1})
    assert top_policies(store, st, 5) == [pols["mixed"].id, pols["w2"].id]   # best PTQ quality first, no baseline

    res = qat_trials(store, st, ctx, 2, opts, max_concurrent=2)
    assert res.evaluated == 2 and res.done == 2 and not res.failures
    qat = {e.policy_id: e for e in store.list_evaluations(st, kind=trial_kind(opts))}
    assert set(qat) == {pols["mixed"].id, pols["w2"].id}
    for pid, e in qat.items():
        assert e.extra["qat_options"] == {"epochs": 1} and e.extra["epochs"] == 1
        assert e.size == ctx.cm.cost("size", next(p for p in pols.values() if p.id == pid))
    # PTQ rows untouched, beside them; the PTQ front alone is what it was
    assert {e.policy_id: e.quality for e in store.list_evaluations(st)} == ptq_before
    assert front(store, st, kind="ptq") == ptq_front and {p["kind"] for p in ptq_front} == {"ptq"}

    merged = {p["policy_id"]: p for p in front(store, st)}
    for pid, e in qat.items():
        p = merged[pid]
        better = e.quality > ptq_before[pid]
        assert p["kind"] == ("qat" if better else "ptq")
        assert p["quality"] == max(e.quality, ptq_before[pid])
        if better:
            assert p["ptq_quality"] == ptq_before[pid] and p["evaluation_kind"] == trial_kind(opts)
    assert merged[pols["w2"].id]["kind"] == "qat"            # 2-bit weights: PTQ collapses, QAT restores
    assert merged[pols["u8"].id]["kind"] == "ptq" and merged[pols["u8"].id]["baseline"]   # baselines: no trial

    again = qat_trials(store, st, ctx, 2, opts, max_concurrent=2)
    assert again.evaluated == 0 and again.done == 2          # resumed: nothing new
    assert len(store.list_evaluations(st, kind=None)) == len(ptq_before) + 2
    other = qat_options({"epochs": 2})                       # another options set is another trial
    assert trial_kind(other) != trial_kind(opts)
    assert pending_trials(store, st, top_policies(store, st, 2), other, 1) == {pols["mixed"].id: 1, pols["w2"].id: 1}

    shown = runner.invoke(app, ["front", "show", "q", "--db", sqlite_url, "--json"])
    assert shown.exit_code == 0, shown.output
    kinds = {p["policy_id"]: p["kind"] for p in json.loads(shown.stdout)["points"]}
    assert kinds == {pid: p["kind"] for pid, p in merged.items()}
    table = runner.invoke(app, ["front", "show", "q", "--db", sqlite_url])
    assert "front (qat)" in table.stdout and "(qat) = the policy's quality after its QAT trial" in table.stdout
    exported = runner.invoke(app, ["front", "export", "q", pols["w2"].id, "--db", sqlite_url, "-f", "checkpoint",
                                   "-o", str(tmp_path / "ckpt")])
    assert exported.exit_code == 0, exported.output     # a checkpoint holds PTQ weights, and says so
    assert f"accuracy {ptq_before[pols['w2'].id]:.4f}: the QAT trial's trained weights" in exported.stdout
    only_ptq = runner.invoke(app, ["front", "show", "q", "--db", sqlite_url, "--kind", "ptq", "--json"])
    assert {p["kind"] for p in json.loads(only_ptq.stdout)["points"]} == {"ptq"}
