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
def evaluator(digits):
    from autocomp.evaluators import get_evaluator

    ptq = get_evaluator("ptq")
    return lambda pol: ptq.evaluate(digits, pol)


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
        store.save_evaluation(st, evaluator(pol).with_costs(costs))
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


def _ppl(q: float, size: float) -> dict:
    return {"quality": q, "quality_metric": "perplexity", "size": size}


def test_dominance_follows_a_lower_is_better_quality():
    from autocomp.report import dominates, pareto

    assert dominates(_ppl(10.0, 50.0), _ppl(12.0, 50.0), ["size"])
    assert not dominates(_ppl(12.0, 50.0), _ppl(10.0, 50.0), ["size"])
    assert not dominates(_ppl(10.0, 60.0), _ppl(12.0, 50.0), ["size"])   # a trade-off
    pts = [_ppl(10.0, 60.0), _ppl(12.0, 50.0), _ppl(13.0, 55.0), _ppl(12.0, 50.0)]
    assert [(p["quality"], p["size"]) for p in pareto(pts, ["size"])] == [(12.0, 50.0), (10.0, 60.0)]
    # the same numbers read as accuracies: the other end of the trade-off wins
    acc = [{"accuracy": p["quality"], "size": p["size"]} for p in pts]
    assert [(p["accuracy"], p["size"]) for p in pareto(acc, ["size"])] == [(12.0, 50.0), (13.0, 55.0)]


def test_hypervolume_of_a_perplexity_front():
    fp = {"size": 100.0}
    pts = [_ppl(10.0, 60.0), _ppl(12.0, 50.0), _ppl(20.0, 20.0)]
    # reference: the worst perplexity (20) and the fp32 size; (20-12)*(0.6-0.5) + (20-10)*(1-0.6)
    assert hypervolume(pts, ["size"], fp) == pytest.approx(8.0 * 0.1 + 10.0 * 0.4)
    assert hypervolume(pts + [_ppl(15.0, 70.0)], ["size"], fp) == pytest.approx(4.8)  # dominated: nothing added
    assert hypervolume(pts, ["size"], fp, reference=[30.0, 1.0]) == pytest.approx(
        10 * 0.3 + 18 * 0.1 + 20 * 0.4)


@pytest.fixture
def perplexity_study(tmp_path, digits_layers):
    from autocomp.metrics import Metrics

    store = Store(f"sqlite:///{tmp_path / 'ppl.db'}")
    cm = CostModel(digits_layers)
    st, _ = store.open_study("lm", {"model": "tiny-lm", "budget_text": "size<=25%"})
    store.update_config(st, fp32={m: cm.fp32(m) for m in cm.metrics}, front_costs=["size"])
    names = [l.name for l in digits_layers]
    # perplexity falls as bits grow, except w3 (worse than w4 at a larger size than w2: dominated)
    for bits, ppl, src in ((2, 40.0, "ilp"), (3, 50.0, "ilp"), (4, 20.0, "ilp"), (8, 15.0, "ilp"),
                           (4, 22.0, "uniform"), (32, 14.0, "fp32")):
        pol = Policy.uniform(names, Choice(bits, 8 if bits < 32 else 32, 0.0 if src != "ilp" or bits != 4 else 0.25))
        costs = cm.costs(pol)
        store.save_policy(st, pol, src, f"{src} w{bits}", costs)
        store.save_evaluation(st, Metrics(pol.id, ppl, "perplexity").with_costs(costs))
    return store


def test_a_perplexity_study_front_table_plot_and_compare(perplexity_study, tmp_path):
    store = perplexity_study
    pts = front(store, store.get_study("lm"))
    searched = [p for p in pts if not p["baseline"]]
    assert [p["quality"] for p in searched] == [40.0, 20.0, 15.0]        # w3 (ppl 50) is dominated
    assert all(p["quality_metric"] == "perplexity" and "accuracy" not in p for p in pts)
    base = {p["label"]: p["on_front"] for p in pts if p["baseline"]}
    assert base == {"uniform w4": False, "fp32 w32": True}  # w4 pruned beats uniform w4; fp32 is the best
    r = CliRunner().invoke(app, ["front", "show", "lm", "--db", store.url, "--json"])
    assert r.exit_code == 0, r.output
    import json

    assert {"quality", "quality_metric", "perplexity", "size"} <= set(json.loads(r.stdout)["points"][0])
    r = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["front", "show", "lm", "--db", store.url])
    assert r.exit_code == 0 and "perplexity" in r.output and "accuracy" not in r.output
    fig = front_figure(store, "lm")
    assert fig.axes[0].get_ylabel() == "perplexity"
    res = compare_studies(store, "lm", "lm")
    assert res["quality_metric"] == "perplexity" and res["studies"][0]["best_perplexity"] == 15.0
    assert res["studies"][0]["hypervolume"] > 0


def test_accuracy_points_keep_their_accuracy_key(studies):
    pts = front(studies, studies.get_study("small"))
    assert all(p["accuracy"] == p["quality"] and p["quality_metric"] == "accuracy" for p in pts)
