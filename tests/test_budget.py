from __future__ import annotations

import pytest

from autocomp.budget import CostModel, parse_budget
from autocomp.errors import BudgetError
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
