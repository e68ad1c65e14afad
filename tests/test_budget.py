from __future__ import annotations

import pytest

from autocomp.budget import Budget, Constraint, CostModel, parse_budget
from autocomp.errors import BudgetError, VersionError
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo


def _layers():
    return [LayerInfo("a", "Linear", (10, 20), 200, 10, 200, (20,), (10,), 0),
            LayerInfo("b", "Conv2d", (4, 2, 3, 3), 72, 0, 72 * 16, (2, 4, 4), (4, 4, 4), 1)]


def test_parse_forms():
    b = parse_budget("size<=25%, size_x<=1" if False else "size<=25%,bitops<=30%,avg_bits<=4")
    assert [(c.metric, c.value, c.relative) for c in b.constraints] == [
        ("size", 0.25, True), ("bitops", 0.30, True), ("avg_bits", 4.0, False)]
    assert parse_budget("size<=1.5MB").constraints[0].value == 1.5e6
    assert parse_budget("size<=300KiB").constraints[0].value == 300 * 1024
    assert parse_budget("bitops<=2.5G").constraints[0].value == 2.5e9
    assert parse_budget("latency<=1.2ms").constraints[0].value == pytest.approx(1.2e-3)


@pytest.mark.parametrize("bad", ["", "size", "size<=", "size<=abc", "size>=25%", "speed<=3", "size<=25%,size<=1MB",
                                 "size<=150%", "size<=-1MB", "size<=3parsecs", "avg_bits<=4MB", "size<=25%;bitops<=3%"])
def test_malformed_budgets_raise_one_line(bad):
    with pytest.raises(BudgetError) as e:
        parse_budget(bad)
    assert "\n" not in str(e.value) and str(e.value)


def test_cost_model_by_hand():
    ls = _layers()
    cm = CostModel(ls, total_params=200 + 72 + 10 + 6)  # 6 more params (a norm) stay fp32
    p = Policy.from_choices({"a": Choice(4, 8), "b": Choice(2, 8, 0.5)})
    assert cm.cost("size", p) == pytest.approx(200 * 4 / 8 + 72 * 2 * 0.5 / 8 + (10 + 6) * 4)
    assert cm.cost("bitops", p) == pytest.approx(200 * 4 * 8 + 72 * 16 * 0.5 * 2 * 8)
    assert cm.cost("avg_bits", p) == pytest.approx((200 * 4 + 72 * 1) / 272)
    assert cm.fp32("size") == pytest.approx((200 + 72 + 16) * 4)
    assert cm.fp32("bitops") == pytest.approx((200 + 72 * 16) * 32 * 32)
    b = parse_budget("size<=50%")
    assert cm.satisfies(p, b)
    assert cm.violations(Policy.uniform(["a", "b"], Choice(32, 32)), b)


def test_latency_needs_a_table():
    cm = CostModel(_layers())
    with pytest.raises(BudgetError, match="latency table"):
        cm.cost("latency", Policy.uniform(["a", "b"], Choice(4, 8)))
    cm = CostModel(_layers(), latency_table={"a": {"w4a8": 1e-3}, "b": {"w4a8": 2e-3}})
    assert cm.cost("latency", Policy.uniform(["a", "b"], Choice(4, 8))) == pytest.approx(3e-3)


def test_budget_resolves_once_to_absolute_limits_in_constraint_order():
    cm = CostModel(_layers(), total_params=200 + 72 + 10 + 6)
    b = parse_budget("bitops<=30%,size<=1.5KB,avg_bits<=4")
    lim = b.resolve(cm)
    assert lim.metrics == ["bitops", "size", "avg_bits"]
    assert lim.as_dict() == {"bitops": 0.3 * cm.fp32("bitops"), "size": 1500.0, "avg_bits": 4.0}
    assert lim["bitops"] == b.constraints[0].limit(cm)   # the same float the constraint gives
    assert lim.describe() == b.describe() and lim.budget == b
    with pytest.raises(KeyError):
        lim["latency"]
    moved = lim.with_limit("size", 1234.0)
    assert moved.metrics == ["size", "bitops", "avg_bits"] and moved["size"] == 1234.0
    assert moved.primary.text == "size<=1.23KB" and not moved.primary.constraint.relative
    assert moved.budget.to_dict()["constraints"][0] == {"metric": "size", "value": 1234.0, "relative": False,
                                                        "text": "size<=1.23KB"}


def test_violations_take_a_budget_or_its_limits():
    cm = CostModel(_layers())
    pol = Policy.uniform(["a", "b"], Choice(32, 32))
    b = parse_budget("size<=50%")
    assert cm.violations(pol, b) == cm.violations(pol, b.resolve(cm)) != []


def test_budget_from_dict_round_trips_and_checks_its_version():
    b = parse_budget("size<=25%,latency<=2ms")
    assert Budget.from_dict(b.to_dict()) == b
    with pytest.raises(VersionError, match="Budget version 9"):
        Budget.from_dict({**b.to_dict(), "version": 9})
    with pytest.raises(VersionError, match="Constraint version 2"):
        Constraint.from_dict({**b.constraints[0].to_dict(), "version": 2})


def test_unit_errors_name_the_metric_units():
    with pytest.raises(BudgetError, match="size takes %, B, KB"):
        parse_budget("size<=12")
    with pytest.raises(BudgetError, match="latency takes %, s, ms or us"):
        parse_budget("latency<=3")
    with pytest.raises(BudgetError, match="use one of size, bitops, avg_bits, latency"):
        parse_budget("speed<=3")
    assert parse_budget("bitops<=7").constraints[0].value == 7.0
    assert parse_budget("avg_bits<=3bits").constraints[0].value == 3.0
