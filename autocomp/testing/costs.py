"""The cost-metric contract: vectorised costs equal the scalar ones, finite and non-negative,
an fp32 reference, every unit parsed, one-line formats, and a budget on the metric that the
allocators keep.

Run it on a metric of your own (registered with :func:`autocomp.costs.register_cost_metric`)::

    from autocomp.testing import CostMetricContract

    class TestKept(CostMetricContract):
        metric = "kept"
        monotone = True        # fewer bits or more pruning never cost more

The suite costs a synthetic 6-layer network (:func:`autocomp.allocators.synthetic.instance`:
1 to 16 weight bits, 4 and 8 activation bits, pruning 0 to 90 %, a latency table); a metric that
``needs`` other inputs returns them from :meth:`CostMetricContract.inputs`.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np
import pytest

from autocomp.allocators import get_allocator
from autocomp.budget import CostModel, parse_budget
from autocomp.costs import cost_metric_names, get_cost_metric
from autocomp.errors import BudgetError, InfeasibleBudget
from autocomp.policy import FLOAT_CHOICE


class CostMetricContract:
    """What every registered cost metric guarantees. Subclasses set ``metric``."""

    metric: ClassVar[str] = ""
    monotone: ClassVar[bool | str] = False   # True; "bits": only at equal pruning; False

    @classmethod
    def inputs(cls, layers, space) -> Mapping[str, Any]:
        """Measured inputs the metric ``needs`` beyond the latency table (default: none)."""
        return {}

    @classmethod
    def layout(cls, layers):
        """The checkpoint file layout the cost model is given (default: none, the earlier
        accounting; see :class:`autocomp.layout.FileLayout`)."""
        return None

    @pytest.fixture(scope="class")
    @classmethod
    def network(cls):
        """(layers, sensitivity, space, cost model with every input, cost model with none)."""
        from autocomp.allocators.synthetic import instance

        layers, sens, space, cm, _ = instance(6, seed=0)
        full = CostModel(layers, latency_table=cm.latency_table, inputs=cls.inputs(layers, space),
                         layout=cls.layout(layers))
        return layers, sens, space, full, CostModel(layers)

    def _costs(self, network):
        layers, _, space, cm, _ = network
        m = get_cost_metric(self.metric)
        choices = {l.name: space.choices_for(l, len(layers)) for l in layers}
        return {l.name: (choices[l.name], m.layer_costs(l, choices[l.name], cm.ctx)) for l in layers}

    def test_registered_under_its_name(self):
        assert self.metric in cost_metric_names()
        assert get_cost_metric(self.metric).name == self.metric
        assert parse_budget(f"{self.metric}<=50%").constraints[0].relative

    def test_vectorised_costs_equal_the_scalar_ones(self, network):
        layers, _, _, cm, _ = network
        m, costs = get_cost_metric(self.metric), self._costs(network)
        for l in layers:
            cs, vec = costs[l.name]
            assert np.shape(vec) == (len(cs),)
            assert np.allclose(vec, [m.layer_cost(l, c, cm.ctx) for c in cs], rtol=1e-12, atol=0), l.name

    def test_costs_are_finite_and_non_negative(self, network):
        cm = network[3]
        values = [float(v) for _, vec in self._costs(network).values() for v in vec] + [cm.offset(self.metric)]
        assert all(math.isfinite(v) and v >= 0 for v in values)

    def test_fp32_is_the_float_model_s_cost(self, network):
        layers, _, _, cm, _ = network
        m = get_cost_metric(self.metric)
        expected = m.offset(cm.ctx) + sum(m.layer_cost(l, FLOAT_CHOICE, cm.ctx) for l in layers)
        assert cm.fp32(self.metric) == pytest.approx(expected, rel=1e-12) and cm.fp32(self.metric) > 0

    def test_fewer_bits_or_more_pruning_never_cost_more(self, network):
        if not self.monotone:
            pytest.skip(f"{self.metric} does not promise monotone costs")
        for name, (cs, vec) in self._costs(network).items():
            for (a, ca), (b, cb) in ((x, y) for x in zip(cs, vec) for y in zip(cs, vec)):
                if self.monotone == "bits" and a.prune != b.prune:
                    continue
                if a.w_bits <= b.w_bits and a.a_bits <= b.a_bits and a.prune >= b.prune:
                    assert ca <= cb * (1 + 1e-12), (name, a.key, b.key)

    def test_every_unit_parses_and_a_bad_one_is_one_line(self):
        m = get_cost_metric(self.metric)
        for unit, factor in m.units.items():
            assert parse_budget(f"{self.metric}<=3{unit}").constraints[0].value == pytest.approx(3 * factor)
        bad = next(u for u in ("qq", "zz", "xyz") if u not in m.units)
        with pytest.raises(BudgetError, match=self.metric) as e:
            parse_budget(f"{self.metric}<=3{bad}")
        assert "\n" not in str(e.value)

    def test_formats_are_one_line(self, network):
        cm = network[3]
        m = get_cost_metric(self.metric)
        for text in (m.format(cm.fp32(self.metric)), cm.describe(self.metric, cm.fp32(self.metric) / 2), m.column,
                     m.label):
            assert isinstance(text, str) and text and "\n" not in text

    def test_available_only_with_what_it_needs(self, network):
        full, bare = network[3], network[4]
        m = get_cost_metric(self.metric)
        assert m.available(full.ctx)
        assert m.available(bare.ctx) == (not m.needs)
        assert (self.metric in full.metrics) == m.reported      # stored with every policy of a study
        if m.needs:
            assert self.metric not in bare.metrics

    def test_allocators_keep_a_budget_on_it(self, network):
        layers, sens, space, cm, _ = network
        limits = parse_budget(f"{self.metric}<=60%").resolve(cm)
        assert limits[self.metric] == pytest.approx(0.6 * cm.fp32(self.metric))
        a = get_allocator("ilp").solve(layers, sens, space, limits, cm)
        assert cm.cost(self.metric, a.policy) <= limits[self.metric] * (1 + 1e-6)
        sweep = get_allocator("dp").sweep(layers, sens, space, limits, cm, points=3)
        assert sweep and all(cm.satisfies(s.policy, s.limits, tol=1e-6) for s in sweep)
        assert sweep[-1].objective == pytest.approx(a.objective, rel=1e-9, abs=1e-12)
        smallest = cm.offset(self.metric) + sum(float(vec.min()) for _, vec in self._costs(network).values())
        if smallest > 0:
            tiny = limits.with_limit(self.metric, smallest / 2)
            with pytest.raises(InfeasibleBudget, match=f"smallest achievable {self.metric}"):
                get_allocator("ilp").solve(layers, sens, space, tiny, cm)
