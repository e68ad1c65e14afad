"""Metrics: the quality metrics a search optimises and the ``Metrics`` value an evaluation returns.

A *quality* metric has a direction: ``accuracy`` and ``cosine`` (fidelity to the fp32 outputs,
in [-1, 1]) are higher-is-better, ``perplexity`` and ``loss`` are lower-is-better. Everything that ranks evaluations (fronts, refinement objectives, audits)
asks the metric for its direction instead of assuming "higher is better".

Example:
    >>> from autocomp.metrics import Metrics, get_quality_metric
    >>> get_quality_metric("perplexity").better(10.0, 12.0)
    True
    >>> m = Metrics("abc", 0.9, costs={"size": 100.0})
    >>> Metrics.from_dict(m.to_dict()) == m
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from autocomp.registry import Registry
from autocomp.values import check_version

METRICS_VERSION = 1


@dataclass(frozen=True)
class QualityMetric:
    """A named quality metric and its direction (``higher_is_better``)."""

    name: str
    higher_is_better: bool = True
    description: str = ""
    bounds: tuple[float | None, float | None] = (None, None)  # the values it can take (targets check them)

    @property
    def direction(self) -> str:
        """Optuna's word for it: ``maximize`` or ``minimize``."""
        return "maximize" if self.higher_is_better else "minimize"

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def no_worse(self, a: float, b: float) -> bool:
        return a >= b if self.higher_is_better else a <= b

    def key(self, value: float) -> float:
        """A sort key where smaller is better (``sorted(xs, key=m.key)`` puts the best first)."""
        return -value if self.higher_is_better else value


_QUALITY: Registry[QualityMetric] = Registry("quality metric")


def register_quality_metric(metric: QualityMetric) -> QualityMetric:
    """Register a quality metric under its name (replacing one of the same name)."""
    _QUALITY.register(metric.name, metric)
    return metric


def get_quality_metric(name: str) -> QualityMetric:
    return _QUALITY.get(name)


def list_quality_metrics() -> list[str]:
    return _QUALITY.names()


register_quality_metric(QualityMetric("accuracy", True, "top-1 accuracy (fraction of samples)", (0.0, 1.0)))
register_quality_metric(QualityMetric("perplexity", False, "exp of the mean token cross-entropy", (1.0, None)))
register_quality_metric(QualityMetric("loss", False, "mean loss on the evaluation batches (a causal LM's: mean "
                                     "next-token cross-entropy in nats over every scored token)", (0.0, None)))
# Encoders without labels: how close the compressed model's outputs stay to the fp32 model's
# (mean cosine similarity per token, 1 = identical direction; see autocomp.workload.cosine_fidelity).
register_quality_metric(QualityMetric("cosine", True, "mean cosine similarity of the outputs to the fp32 model's",
                                      (-1.0, 1.0)))


@dataclass(frozen=True)
class Metrics:
    """What one evaluation of one policy measured.

    Attributes:
        policy_id: the evaluated policy.
        quality: the quality metric's value (e.g. accuracy).
        quality_metric: its name in the quality-metric registry (gives the direction).
        costs: cost metric name -> absolute value (bytes, bit-ops, bits, seconds).
        extras: anything else worth keeping (epochs, node, kernel figures ...), JSON-able.
        seconds: wall time of the evaluation.
    """

    policy_id: str
    quality: float
    quality_metric: str = "accuracy"
    costs: Mapping[str, float] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    version: int = METRICS_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "policy_id": self.policy_id, "quality": self.quality,
                "quality_metric": self.quality_metric, "costs": dict(self.costs), "extras": dict(self.extras),
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Metrics":
        check_version("Metrics", d, METRICS_VERSION)
        return cls(str(d["policy_id"]), float(d["quality"]), str(d.get("quality_metric", "accuracy")),
                   {k: float(v) for k, v in dict(d.get("costs") or {}).items()}, dict(d.get("extras") or {}),
                   None if d.get("seconds") is None else float(d["seconds"]))

    def with_costs(self, costs: Mapping[str, float]) -> "Metrics":
        """A copy with ``costs`` merged in (the controller adds the cost model's figures)."""
        return Metrics(self.policy_id, self.quality, self.quality_metric, {**self.costs, **costs},
                       self.extras, self.seconds, self.version)
