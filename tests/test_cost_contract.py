"""The cost-metric contract (:mod:`autocomp.testing.costs`) on every built-in metric and on a
metric a user registers here."""
from __future__ import annotations

import numpy as np
import pytest

from autocomp import costs
from autocomp.costs import CostMetric, cost_metric_names, register_cost_metric
from autocomp.testing import CostMetricContract


class TestSize(CostMetricContract):
    metric = "size"
    monotone = True


class TestSizeOfTheFile(CostMetricContract):
    """``size`` counting a checkpoint file: a pruned layer also stores where its weights are, so
    pruning lightly at high bits costs more than not pruning; fewer bits never cost more."""

    metric = "size"
    monotone = "bits"

    @classmethod
    def layout(cls, layers):
        from autocomp.layout import FileLayout

        return FileLayout(other_bytes=4096, offset_digits=6)

    def test_the_file_accounting_is_used(self, network):
        layers, _, _, full, bare = network
        from autocomp.policy import Choice, Policy

        pol = Policy.uniform([l.name for l in layers], Choice(4, 8))
        assert full.cost("size", pol) > bare.cost("size", pol)   # scales and headers counted


class TestBitOps(CostMetricContract):
    metric = "bitops"
    monotone = True


class TestAvgBits(CostMetricContract):
    metric = "avg_bits"
    monotone = True


class TestLatency(CostMetricContract):
    """Measured per layer: fewer bits may be slower (no kernel for them)."""

    metric = "latency"


class Kept(CostMetric):
    """A user's metric: weights kept after pruning, at any bits."""

    name = "kept"
    units = {"": 1.0, "k": 1e3}
    unit_help = "%, or a count with K"

    def layer_costs(self, layer, choices, ctx):
        return layer.params * (1.0 - np.array([c.prune for c in choices]))


class TestUserMetric(CostMetricContract):
    metric = "kept"
    monotone = True

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _registered(cls):
        with pytest.MonkeyPatch.context() as mp:      # registered for this class only
            mp.setattr(costs, "_COSTS", costs._COSTS.copy())
            register_cost_metric(Kept())
            yield


def test_every_built_in_metric_runs_the_contract():
    covered = {c.metric for c in (TestSize, TestBitOps, TestAvgBits, TestLatency)}
    assert covered == set(cost_metric_names())
