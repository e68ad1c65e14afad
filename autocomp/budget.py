"""Budgets, their resolution to absolute limits, and the cost model.

A budget is a comma-separated list of constraints, each ``METRIC<=VALUE[UNIT]`` on a registered
cost metric (:mod:`autocomp.costs`):

- ``size<=25%`` (of the fp32 model), ``size<=1.5MB`` / ``size<=300KB`` / ``size<=12000B``
- ``bitops<=30%`` (of fp32 x fp32 BitOps), ``bitops<=2.5G`` (absolute, K/M/G/T suffixes)
- ``avg_bits<=4`` (parameter-weighted average weight bits of the quantizable layers,
  pruned weights counted as 0 bits)
- ``latency<=70%`` / ``latency<=1.2ms`` (needs a latency table, see ``autocomp profile-latency``)

A budget resolves once, against a :class:`CostModel`, to :class:`Limits`: an absolute bound per
metric, which is all an allocator sees.

Example:
    >>> from autocomp.budget import CostModel, parse_budget
    >>> from autocomp.profile import LayerInfo
    >>> budget = parse_budget("size<=25%,avg_bits<=4")
    >>> budget.describe()
    'size<=25%, avg_bits<=4'
    >>> cm = CostModel([LayerInfo("fc", "Linear", (10, 100), 1000, 0, 1000, (100,), (10,), 0)])
    >>> budget.resolve(cm).as_dict()
    {'size': 1000.0, 'avg_bits': 4.0}
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from autocomp.costs import CostContext, cost_metric_names, get_cost_metric, reported_metrics
from autocomp.errors import BudgetError
from autocomp.layout import FileLayout
from autocomp.policy import FLOAT_CHOICE, Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.values import check_version

BUDGET_VERSION = 1
_RE = re.compile(r"^\s*([a-z_]+)\s*(<=|<)\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z%]*)\s*$", re.I)


@dataclass(frozen=True)
class Constraint:
    """``metric <= value``; ``relative`` values are fractions of the fp32 model's cost."""

    metric: str
    value: float
    relative: bool = False
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "relative": self.relative, "text": self.text}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Constraint":
        check_version("Constraint", d, BUDGET_VERSION)
        return cls(d["metric"], float(d["value"]), bool(d.get("relative", False)), d.get("text", ""))

    def limit(self, ref: "CostModel") -> float:
        """The bound in absolute units (bytes, bit-ops, bits, seconds)."""
        return self.value * ref.fp32(self.metric) if self.relative else self.value

    def describe(self) -> str:
        return self.text or f"{self.metric}<={self.value:g}{'%' if self.relative else ''}"


@dataclass(frozen=True)
class Limit:
    """One resolved constraint: ``metric`` at most ``bound`` (absolute units)."""

    metric: str
    bound: float
    constraint: Constraint

    @property
    def text(self) -> str:
        """The constraint as the user wrote it (for messages)."""
        return self.constraint.describe()


@dataclass(frozen=True)
class Limits:
    """A budget resolved to absolute bounds, in constraint order (the first is the sweep's).

    Example:
        >>> lim = Limits((Limit("size", 2000.0, Constraint("size", 0.25, True, "size<=25%")),))
        >>> lim["size"], lim.with_limit("size", 1500.0).describe()
        (2000.0, 'size<=1.50KB')
    """

    limits: tuple[Limit, ...]

    def __getitem__(self, metric: str) -> float:
        for l in self.limits:
            if l.metric == metric:
                return l.bound
        raise KeyError(metric)

    def __iter__(self) -> Iterator[Limit]:
        return iter(self.limits)

    def __len__(self) -> int:
        return len(self.limits)

    @property
    def metrics(self) -> list[str]:
        return [l.metric for l in self.limits]

    @property
    def primary(self) -> Limit:
        return self.limits[0]

    def as_dict(self) -> dict[str, float]:
        return {l.metric: l.bound for l in self.limits}

    @property
    def budget(self) -> "Budget":
        """The constraints these limits came from (what a study stores with a policy)."""
        return Budget(tuple(l.constraint for l in self.limits))

    def describe(self) -> str:
        return ", ".join(l.text for l in self.limits)

    def with_limit(self, metric: str, bound: float) -> "Limits":
        """A copy whose bound on ``metric`` is ``bound`` (absolute), moved first; the others keep
        their order."""
        text = f"{metric}<={get_cost_metric(metric).format(bound)}"
        first = Limit(metric, bound, Constraint(metric, bound, False, text))
        return Limits((first, *(l for l in self.limits if l.metric != metric)))


@dataclass(frozen=True)
class Budget:
    constraints: tuple[Constraint, ...]
    version: int = BUDGET_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "constraints": [c.to_dict() for c in self.constraints]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Budget":
        check_version("Budget", d, BUDGET_VERSION)
        return cls(tuple(Constraint.from_dict(c) for c in d["constraints"]))

    def describe(self) -> str:
        return ", ".join(c.describe() for c in self.constraints)

    @property
    def metrics(self) -> list[str]:
        return [c.metric for c in self.constraints]

    def resolve(self, cost_model: "CostModel") -> Limits:
        """Every constraint as an absolute bound on ``cost_model``'s model."""
        return Limits(tuple(Limit(c.metric, c.limit(cost_model), c) for c in self.constraints))


def parse_budget(text: str) -> Budget:
    """Parse ``"size<=25%,bitops<=30%"``; raises :class:`BudgetError` with the bad part named."""
    if not text or not text.strip():
        raise BudgetError("empty budget: give e.g. --budget 'size<=25%'")
    out = []
    for part in text.split(","):
        m = _RE.match(part)
        if not m:
            raise BudgetError(f"malformed budget term {part.strip()!r}: expected METRIC<=VALUE[UNIT], e.g. size<=25% or size<=1.5MB")
        metric, _, num, unit = m.groups()
        metric, unit, value, term = metric.lower(), unit.lower(), float(num), part.strip()
        if metric not in cost_metric_names():
            raise BudgetError(f"unknown budget metric {metric!r} in {term!r}: use one of {', '.join(cost_metric_names())}")
        if value <= 0:
            raise BudgetError(f"budget term {term!r}: the bound must be positive")
        if unit == "%":
            if value > 100:
                raise BudgetError(f"budget term {term!r}: a relative bound is at most 100%")
            out.append(Constraint(metric, value / 100.0, True, term))
        else:
            out.append(Constraint(metric, get_cost_metric(metric).parse(value, unit, term), False, term))
    seen = set()
    for c in out:
        if c.metric in seen:
            raise BudgetError(f"budget names {c.metric!r} twice")
        seen.add(c.metric)
    return Budget(tuple(out))


class CostModel:
    """Costs of a policy on a profiled model, for every registered cost metric.

    Args:
        layers: the profiled quantizable layers.
        total_params: every parameter of the model (default: the layers' weights and biases).
        latency_table: ``{layer: {choice_key: seconds}}`` for the ``latency`` metric.
        inputs: further measured inputs a registered metric ``needs``, by name.
        layout: the model-wide part of a checkpoint's size (:func:`autocomp.layout.file_layout`);
            given, ``size`` counts the checkpoint file's bytes (see :class:`autocomp.costs.Size`).
    """

    def __init__(self, layers: Sequence[LayerInfo], total_params: int | None = None,
                 latency_table: Mapping[str, Mapping[str, float]] | None = None,
                 inputs: Mapping[str, Any] | None = None, layout: FileLayout | None = None):
        self.layers = list(layers)
        self.qparams = sum(l.params for l in self.layers)
        self.total_params = int(total_params if total_params is not None else
                                self.qparams + sum(l.bias_params for l in self.layers))
        self.other_params = self.total_params - self.qparams
        self.latency_table = latency_table
        extra = {**(inputs or {}), **({"latency_table": latency_table} if latency_table is not None else {})}
        self.layout = layout
        self.ctx = CostContext(tuple(self.layers), self.qparams, self.other_params, extra, layout)

    @property
    def metrics(self) -> list[str]:
        """The reported metrics this model has the inputs for (what a study stores per policy)."""
        return [m.name for m in reported_metrics() if m.available(self.ctx)]

    # ---- per layer -------------------------------------------------------------------------
    def layer_cost(self, metric: str, layer: LayerInfo, choice: Choice) -> float:
        """Contribution of one layer's choice to ``metric`` (before any constant offset)."""
        return get_cost_metric(metric).layer_cost(layer, choice, self.ctx)

    def layer_costs(self, metric: str, layer: LayerInfo, choices: Sequence[Choice]) -> np.ndarray:
        """:meth:`layer_cost` for every one of ``choices`` at once."""
        return get_cost_metric(metric).layer_costs(layer, choices, self.ctx)

    def offset(self, metric: str) -> float:
        """The part of ``metric`` no choice changes (e.g. fp32 non-quantizable parameters)."""
        return get_cost_metric(metric).offset(self.ctx)

    # ---- whole policy ----------------------------------------------------------------------
    def cost(self, metric: str, policy: Policy) -> float:
        m, ch = get_cost_metric(metric), policy.as_dict()
        return m.offset(self.ctx) + sum(m.layer_cost(l, ch.get(l.name, FLOAT_CHOICE), self.ctx) for l in self.layers)

    def costs(self, policy: Policy, metrics: Sequence[str] | None = None) -> dict[str, float]:
        """``metric -> cost`` for ``metrics`` (default :attr:`metrics`); metrics whose inputs
        this model lacks are left out."""
        names = self.metrics if metrics is None else [m for m in metrics if get_cost_metric(m).available(self.ctx)]
        return {m: self.cost(m, policy) for m in names}

    def fp32(self, metric: str) -> float:
        """Cost of the uncompressed model (the reference for relative budgets)."""
        return get_cost_metric(metric).fp32(self.ctx)

    def satisfies(self, policy: Policy, budget: Budget | Limits, tol: float = 1e-9) -> bool:
        return not self.violations(policy, budget, tol)

    def violations(self, policy: Policy, budget: Budget | Limits, tol: float = 1e-9) -> list[str]:
        """Constraints the policy breaks, as readable strings (empty when it fits)."""
        limits = budget.resolve(self) if isinstance(budget, Budget) else budget
        bad = []
        for l in limits:
            v = self.cost(l.metric, policy)
            if v > l.bound * (1 + tol) + tol:
                bad.append(f"{l.metric}={self.format(l.metric, v)} > {self.format(l.metric, l.bound)}")
        return bad

    def format(self, metric: str, value: float) -> str:
        """Human units: size in KB/MB, bitops in G, avg_bits in bits, latency in ms."""
        return get_cost_metric(metric).format(value)

    def describe(self, metric: str, value: float) -> str:
        """``value`` for a message, with its share of fp32 where that means something."""
        return get_cost_metric(metric).describe(value, self.fp32(metric))

    def relative(self, metric: str, value: float) -> float:
        ref = self.fp32(metric)
        return value / ref if ref else 0.0
