"""``autocomp search --trials nas`` end to end through the CLI, its bad input, and the exports of
a NAS policy (its JSON carries the architecture; a checkpoint is refused in one line)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocomp.arch import Architecture
from autocomp.cli import app
from autocomp.policy import Policy
from autocomp.store import Store

runner = CliRunner()


@pytest.mark.parametrize("model", ["tiny-lm", "my_models.py:make"])
def test_nas_on_a_workload_without_a_builder_is_one_line_exit_2(model, capfd, tmp_path, monkeypatch):
    from autocomp.cli import main

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "new.db"
    with pytest.raises(SystemExit) as exc:
        main(["search", "--study", "t", "--db", str(db), "--model", model, "--trials", "nas", "--nas-samples", "2"])
    out, err = capfd.readouterr()
    errors = [l for l in (out + err).splitlines() if l.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1 and "Traceback" not in out + err, out + err
    assert "needs an architecture builder" in errors[0] and repr(model) in errors[0]
    assert not db.exists()


def test_search_trials_nas_stores_nas_points_on_the_front_and_exports_them(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_TUNE_DIR", str(tmp_path / "tune"))
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = ["search", "--study", "e", "--db", db, "--points", "2", "--workers", "2", "--trials", "nas",
            "--nas-samples", "2", "--trial-steps", "12"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    store = Store(db)
    st = store.get_study("e")
    nas = [p for p in store.list_policies(st) if p.source == "nas"]
    assert 1 <= len(nas) <= 2 and all(Policy.from_dict(p.policy).arch is not None for p in nas)
    shown = runner.invoke(app, ["front", "show", "e", "--db", db, "--json"])
    assert shown.exit_code == 0, shown.output
    points = json.loads(shown.stdout)["points"]
    evaluated = {e.policy_id for e in store.list_evaluations(st, kind="nas")}
    assert evaluated and {p["policy_id"] for p in points if p.get("kind") == "nas"} <= evaluated
    pid = sorted(evaluated)[0]
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["front", "export", "e", pid, "--format", "policy", "-o", str(out), "--db", db])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    back = Policy.from_dict(doc)
    assert back.id == pid and isinstance(back.arch, Architecture) and doc["source"] == "nas"
    r = runner.invoke(app, ["front", "export", "e", pid, "--format", "checkpoint", "-o", str(tmp_path / "ck"),
                            "--db", db])
    assert r.exit_code == 2 and "is a NAS candidate" in r.output and not (tmp_path / "ck").exists()
    again = runner.invoke(app, args)                  # resumed: the study holds its 2 NAS trials
    assert again.exit_code == 0, again.output
    assert len([p for p in store.list_policies(st) if p.source == "nas"]) == len(nas)
