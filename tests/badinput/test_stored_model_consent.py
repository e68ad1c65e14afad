"""``autocomp validate`` never imports a model spec from the database unless the user says so.

Whoever can write a shared study database chooses its stored ``model``; importing a
``file.py:factory`` runs that file. The file below leaves a marker when it is imported.
"""
from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from autocomp.budget import CostModel
from autocomp.cli import app
from autocomp.errors import AutocompError
from autocomp.evaluators import get_evaluator
from autocomp.policy import Choice, Policy
from autocomp.profile import model_param_count
from autocomp.stages.validate import model_spec_to_run
from autocomp.store import Store

runner = CliRunner()


def _rows(url: str) -> list[str]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return list(conn.iterdump())


@pytest.fixture
def planted(tmp_path, digits, digits_layers):
    marker = tmp_path / "imported.txt"
    spec_file = tmp_path / "planted_model.py"
    spec_file.write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                         "from autocomp.workloads.digits import digits as make\n")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = Store(url)
    study, _ = store.open_study("shared", {"model": f"{spec_file}:make", "budget_text": "size<=25%"})
    store.save_layers(study, digits_layers)
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    store.update_config(study, fp32={m: cm.fp32(m) for m in ("size", "bitops", "avg_bits")}, front_costs=["size"])
    pol = Policy.uniform([l.name for l in digits_layers], Choice(8, 8))
    store.save_policy(study, pol, "uniform", "uniform w8a8", cm.costs(pol))
    store.save_evaluation(study, get_evaluator("ptq").evaluate(digits, pol).with_costs(cm.costs(pol)))
    return url, spec_file, marker


def test_validate_refuses_a_stored_file_spec_without_consent(planted):
    url, spec_file, marker = planted
    before = _rows(url)
    r = runner.invoke(app, ["validate", "shared", "--db", url, "--device", "cpu", "--repeats", "1"])
    assert r.exit_code == 2, r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(spec_file) in lines[0]
    assert "--trust-stored-model" in lines[0] and "Traceback" not in r.output
    assert not marker.exists()                                     # the file was never imported
    assert _rows(url) == before                                    # nor the study touched


def test_validate_runs_the_user_named_or_trusted_spec(planted):
    url, spec_file, marker = planted
    r = runner.invoke(app, ["validate", "shared", "--db", url, "--device", "cpu", "--repeats", "1",
                            "--model", "digits"])
    assert r.exit_code == 0, r.output
    assert not marker.exists()                                     # the user's own model, not the stored one
    r = runner.invoke(app, ["validate", "shared", "--db", url, "--device", "cpu", "--repeats", "1",
                            "--trust-stored-model"])
    assert r.exit_code == 0, r.output
    assert marker.read_text() == "ran" and f"importing the study's stored model '{spec_file}:make'" in r.output


@pytest.mark.parametrize("stored", ["pkg.mod:make", "/x/m.py:f", "hf:/models/x"])
def test_only_builtins_load_without_consent(stored):
    with pytest.raises(AutocompError, match="--trust-stored-model"):
        model_spec_to_run(stored)
    assert model_spec_to_run(stored, trust_stored=True) == stored
    assert model_spec_to_run(stored, model="digits") == "digits"
    assert model_spec_to_run("digits-vit") == "digits-vit"
