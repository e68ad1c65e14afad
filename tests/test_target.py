"""Quality targets (values layer): every form, its direction, its threshold and its errors; and the
search options that go with a target, checked before anything runs."""
from __future__ import annotations

import pytest

from autocomp.errors import AutocompError
from autocomp.search import SearchConfig, check_config
from autocomp.target import Target, parse_target


@pytest.mark.parametrize("text, quality, reference, threshold", [
    ("drop<=1%", "accuracy", 0.97, 0.97 * 0.99),
    ("drop <= 2.5 %", "accuracy", 0.8, 0.8 * 0.975),
    ("drop<=0.5pt", "accuracy", 0.97, 0.965),
    ("drop<=0%", "accuracy", 0.97, 0.97),
    ("accuracy>=0.97", "accuracy", 0.5, 0.97),
    ("metric>=0.9", "accuracy", 0.97, 0.9),
    ("accuracy>=-1%", "accuracy", 0.97, 0.97 * 0.99),
    ("drop<=5%", "perplexity", 20.0, 21.0),
    ("perplexity<=+5%", "perplexity", 20.0, 21.0),
    ("perplexity<=25", "perplexity", 20.0, 25.0),
    ("metric<=3.5", "loss", 2.0, 3.5),
])
def test_forms_and_thresholds(text, quality, reference, threshold):
    t = parse_target(text)
    t.check(quality)
    assert t.threshold(reference, quality) == pytest.approx(threshold)
    assert Target.from_dict(t.to_dict()) == t


def test_met_follows_the_metric_direction():
    acc, ppl = parse_target("drop<=1%"), parse_target("perplexity<=+5%")
    assert acc.met(0.9603, 0.97, "accuracy") and not acc.met(0.96, 0.97, "accuracy")
    assert ppl.met(21.0, 20.0, "perplexity") and not ppl.met(21.01, 20.0, "perplexity")
    assert parse_target("drop<=0.5pt").value == 0.005
    assert parse_target("drop<=1%").describe(0.97, "accuracy") == "accuracy>=0.9603"


@pytest.mark.parametrize("text, match", [
    ("", "malformed target"),
    ("drop<1%", "malformed target"),
    ("drop<=1", r"give the drop in % \(relative\) or pt"),
    ("drop>=1%", "bounded from above"),
    ("drop<=100%", "below 100%"),
    ("top5>=0.9", "unknown target metric 'top5'"),
    ("accuracy>=1%", "signed change from fp32"),
    ("accuracy>=+1%", "signed change from fp32"),
    ("accuracy>=0.5pt", "points go with a drop"),
    ("accuracy>=-0.9", "add %"),
])
def test_malformed_targets(text, match):
    with pytest.raises(AutocompError, match=match) as e:
        parse_target(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, quality, match", [
    ("accuracy<=0.9", "accuracy", "the wrong way: higher is better"),
    ("metric<=0.9", "accuracy", "the wrong way"),
    ("perplexity>=20", "perplexity", "the wrong way: lower is better"),
    ("perplexity<=-5%", "perplexity", "signed change"),
    ("accuracy>=1.01", "accuracy", r"lies in \[0, 1\]"),
    ("accuracy>=0.9", "perplexity", "names accuracy, but this workload measures perplexity"),
    ("drop<=0.5pt", "perplexity", r"points \(pt\) are for metrics in \[0, 1\]"),
])
def test_targets_that_do_not_fit_the_workload(text, quality, match):
    with pytest.raises(AutocompError, match=match):
        parse_target(text).check(quality)


@pytest.mark.parametrize("changes, match", [
    ({"minimise": "bitops"}, "--minimise applies only with --target"),
    ({"max_evals": 3}, "--max-evals applies only with --target"),
    ({"target": "drop<=1"}, "give the drop"),
    ({"target": "drop<=1%", "minimise": "weight"}, "unknown cost metric 'weight'"),
    ({"target": "drop<=1%", "target_tol": 0.0}, "--target-tol"),
    ({"target": "drop<=1%", "max_evals": 0}, "--max-evals must be at least 1"),
    ({"target": "drop<=1%", "refine": 4}, "--refine does not combine with --target"),
    ({"target": "drop<=1%", "minimise": "latency"}, "--minimise latency needs measured latencies"),
    ({"target": "drop<=1%", "minimise": "bitops", "allocator": "dp"}, "the dp allocator handles 1 constraint"),
])
def test_search_options_checked_up_front(changes, match):
    with pytest.raises(AutocompError, match=match):
        check_config(SearchConfig(**changes))


def test_config_without_a_target_stores_what_it_always_stored():
    assert not {"target", "minimise", "target_tol", "max_evals"} & set(SearchConfig().to_dict())
    cfg = SearchConfig(target="drop<=1%", budget="size<=100%")
    check_config(cfg)
    assert cfg.to_dict()["target"] == "drop<=1%"
    assert cfg.resume_command("s") == ("autocomp search --study s --budget 'size<=100%' --target 'drop<=1%' "
                                       "--minimise size --target-tol 0.02 --max-evals 12")
