"""Front plots, HTML reports and study comparison, on studies holding real PTQ evaluations of digits."""
from __future__ import annotations

import base64
import re

import pytest
from typer.testing import CliRunner

from autocomp.budget import CostModel, parse_budget
from autocomp.cli import app
from autocomp.compare import compare_studies, hypervolume
from autocomp.html_report import render_report, write_report
from autocomp.plot import front_figure, plot_front
from autocomp.policy import Choice, Policy
from autocomp.profile import model_param_count
from autocomp.report import front
from autocomp.store import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluator():
    from autocomp.workers.ptq import PTQEvaluator

    return PTQEvaluator("digits")


def _policies(names: list[str]) -> list[tuple[Policy, str, str]]:
    """Uniform baselines, fp32, and mixed policies (first/last layers kept at 8 bits)."""
    out = [(Policy.uniform(names, Choice(b, 8, 0.0)), "uniform", f"uniform w{b}a8") for b in (8, 4, 2)]
    out.append((Policy.uniform(names, Choice(32, 32, 0.0)), "fp32", "fp32"))
    for i, (mid, src) in enumerate(((3, "ilp"), (4, "ilp"), (2, "optuna"), (6, "optuna"))):
        ch = [(n, Choice(8 if j in (0, len(names) - 1) else mid, 8, 0.5 if (src == "optuna" and j == 3) else 0.0))
              for j, n in enumerate(names)]
        out.append((Policy.from_choices(ch), src, f"{src} #{i}"))
    return out


def _make_study(store: Store, name: str, layers, model, evaluator, budget: str, keep: int | None = None):
    b = parse_budget(budget)
    cm = CostModel(layers, total_params=model_param_count(model))
    st, _ = store.open_study(name, {"model": "digits", "budget_text": b.describe(), "proxy": "loss_delta",
                                    "space": "mixed_precision"})
    store.save_layers(st, layers)
    store.update_config(st, fp32={m: cm.fp32(m) for m in ("size", "bitops", "avg_bits")},
                        front_costs=b.metrics)
    pols = _policies([l.name for l in layers])
    if keep is not None:  # a smaller study: the baselines and only the first searched policies
        pols = [p for p in pols if p[1] in ("uniform", "fp32")] + [p for p in pols if p[1] not in ("uniform", "fp32")][:keep]
    for pol, src, label in pols:
        costs = cm.costs(pol)
        store.save_policy(st, pol, src, label, costs)
        store.save_evaluation(st, pol.id, {**evaluator.evaluate(pol.to_dict()), **costs})
    return st


@pytest.fixture(scope="module")
def studies(tmp_path_factory, digits, digits_layers, evaluator):
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'r.db'}"
    store = Store(url)
    _make_study(store, "two-costs", digits_layers, digits.model(), evaluator, "size<=25%,bitops<=30%")
    _make_study(store, "small", digits_layers, digits.model(), evaluator, "size<=25%", keep=1)
    return store


def test_plot_has_one_panel_per_budgeted_cost(studies, tmp_path):
    fig = front_figure(studies, "two-costs")
    assert [ax.get_xlabel() for ax in fig.axes] == ["size (% of fp32)", "BitOps (% of fp32)"]
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "uniform baselines" in labels and "front (all budgeted costs)" in labels and "Optuna refinement" in labels
    out = plot_front(studies, "two-costs", tmp_path / "front.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_report_is_self_contained(studies, tmp_path):
    page = render_report(studies, "two-costs")
    m = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert m and base64.b64decode(m.group(1))[:8] == PNG_MAGIC
    assert not re.search(r"(src|href)=['\"]?https?:", page)      # nothing fetched from elsewhere
    st = studies.get_study("two-costs")
    pts = front(studies, st)
    for p in pts:
        assert p["policy_id"] in page
    for l in studies.load_layers(st):
        assert f"<th>{l.name}</th>" in page
    # the per-layer map shows the pruned layer of the pruned optuna policy
    assert "<br>p0.5" in page
    out = write_report(studies, "two-costs", tmp_path / "report.html")
    assert out.read_text(encoding="utf-8") == page


def test_hypervolume_exact_values():
    fp = {"size": 100.0, "bitops": 10.0}
    one = [{"accuracy": 0.9, "size": 50.0}]
    assert hypervolume(one, ["size"], fp) == pytest.approx(0.45)
    two = one + [{"accuracy": 0.5, "size": 20.0}, {"accuracy": 0.4, "size": 60.0}]  # the last is dominated
    assert hypervolume(two, ["size"], fp) == pytest.approx(0.45 + 0.5 * 0.3)
    three_d = [{"accuracy": 0.8, "size": 50.0, "bitops": 5.0}, {"accuracy": 0.6, "size": 20.0, "bitops": 8.0}]
    # inclusion-exclusion of the two boxes: 0.8*.5*.5 + 0.6*.8*.2 - 0.6*.5*.2
    assert hypervolume(three_d, ["size", "bitops"], fp) == pytest.approx(0.2 + 0.096 - 0.06)


def test_compare_ranks_the_larger_front_higher(studies):
    res = compare_studies(studies, "two-costs", "small", costs=["size"])
    big, small = res["studies"]
    assert res["costs"] == ["size"]
    assert big["front_size"] >= small["front_size"] >= 1
    assert big["hypervolume"] >= small["hypervolume"] > 0


def test_cli_plot_report_compare(studies, tmp_path):
    runner = CliRunner()
    db = ["--db", studies.url]
    r = runner.invoke(app, ["front", "plot", "two-costs", "-o", str(tmp_path / "f.png"), *db])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC
    r = runner.invoke(app, ["report", "two-costs", "-o", str(tmp_path / "r.html"), *db])
    assert r.exit_code == 0, r.output
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    r = runner.invoke(app, ["studies", "compare", "two-costs", "small", *db])
    assert r.exit_code == 0, r.output
    assert "hypervolume" in r.output and "two-costs" in r.output and "small" in r.output
    r = runner.invoke(app, ["report", "missing", "-o", str(tmp_path / "x.html"), *db])
    assert r.exit_code == 2 and "no study named 'missing'" in r.output
    r = runner.invoke(app, ["front", "plot", "two-costs", "-o", str(tmp_path / "nodir" / "f.png"), *db])
    assert r.exit_code == 2 and "cannot write" in r.output
