"""Budgets and the cost model.

A budget is a comma-separated list of constraints, each ``METRIC<=VALUE[UNIT]``:

- ``size<=25%`` (of the fp32 model), ``size<=1.5MB`` / ``size<=300KB`` / ``size<=12000B``
- ``bitops<=30%`` (of fp32 x fp32 BitOps), ``bitops<=2.5G`` (absolute, K/M/G/T suffixes)
- ``avg_bits<=4`` (parameter-weighted average weight bits of the quantizable layers,
  pruned weights counted as 0 bits)
- ``latency<=70%`` / ``latency<=1.2ms`` (needs a latency table, see ``autocomp profile-latency``)

Example:
    >>> from autocomp.budget import parse_budget
    >>> parse_budget("size<=25%,avg_bits<=4").describe()
    'size<=25%, avg_bits<=4'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from autocomp.errors import BudgetError
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo

METRICS = ("size", "bitops", "avg_bits", "latency")
FLOAT_BITS = 32
_SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_COUNT_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
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
        return cls(d["metric"], float(d["value"]), bool(d.get("relative", False)), d.get("text", ""))

    def limit(self, ref: "CostModel") -> float:
        """The bound in absolute units (bytes, bit-ops, bits, seconds)."""
        return self.value * ref.fp32(self.metric) if self.relative else self.value

    def describe(self) -> str:
        return self.text or f"{self.metric}<={self.value:g}{'%' if self.relative else ''}"


@dataclass(frozen=True)
class Budget:
    constraints: tuple[Constraint, ...]
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "constraints": [c.to_dict() for c in self.constraints]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Budget":
        return cls(tuple(Constraint.from_dict(c) for c in d["constraints"]))

    def describe(self) -> str:
        return ", ".join(c.describe() for c in self.constraints)

    @property
    def metrics(self) -> list[str]:
        return [c.metric for c in self.constraints]

    def with_limit(self, metric: str, limit_abs: float, ref: "CostModel") -> "Budget":
        """A copy whose constraint on ``metric`` is replaced by an absolute ``limit_abs``."""
        out = [c for c in self.constraints if c.metric != metric]
        out.insert(0, Constraint(metric, limit_abs, False, f"{metric}<={ref.format(metric, limit_abs)}"))
        return Budget(tuple(out))


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
        metric, unit, value = metric.lower(), unit.lower(), float(num)
        if metric not in METRICS:
            raise BudgetError(f"unknown budget metric {metric!r} in {part.strip()!r}: use one of {', '.join(METRICS)}")
        if value <= 0:
            raise BudgetError(f"budget term {part.strip()!r}: the bound must be positive")
        if unit == "%":
            if value > 100:
                raise BudgetError(f"budget term {part.strip()!r}: a relative bound is at most 100%")
            out.append(Constraint(metric, value / 100.0, True, part.strip()))
            continue
        if metric == "size":
            if unit not in _SIZE_UNITS:
                raise BudgetError(f"budget term {part.strip()!r}: size takes %, B, KB, MB, GB, KiB, MiB or GiB")
            out.append(Constraint(metric, value * _SIZE_UNITS[unit], False, part.strip()))
        elif metric == "bitops":
            if unit not in _COUNT_UNITS:
                raise BudgetError(f"budget term {part.strip()!r}: bitops takes %, or a count with K/M/G/T")
            out.append(Constraint(metric, value * _COUNT_UNITS[unit], False, part.strip()))
        elif metric == "avg_bits":
            if unit not in ("", "b", "bits"):
                raise BudgetError(f"budget term {part.strip()!r}: avg_bits takes a plain number of bits")
            out.append(Constraint(metric, value, False, part.strip()))
        else:  # latency
            if unit not in _TIME_UNITS:
                raise BudgetError(f"budget term {part.strip()!r}: latency takes %, s, ms or us")
            out.append(Constraint(metric, value * _TIME_UNITS[unit], False, part.strip()))
    seen = set()
    for c in out:
        if c.metric in seen:
            raise BudgetError(f"budget names {c.metric!r} twice")
        seen.add(c.metric)
    return Budget(tuple(out))


class CostModel:
    """Costs of a policy on a profiled model.

    size: bytes = quantizable weights at their bits (pruned weights dropped; sparse-index overhead
    is not counted) + every other parameter (biases, norms, embeddings) in fp32.
    bitops: sum over layers of MACs x (1 - prune) x w_bits x a_bits (float = 32 bits).
    avg_bits: parameter-weighted mean of w_bits x (1 - prune) over the quantizable layers.
    latency: sum of per-layer latencies from a table ``{layer: {choice_key: seconds}}``.
    """

    def __init__(self, layers: Sequence[LayerInfo], total_params: int | None = None,
                 latency_table: Mapping[str, Mapping[str, float]] | None = None):
        self.layers = list(layers)
        self.qparams = sum(l.params for l in self.layers)
        self.total_params = int(total_params if total_params is not None else
                                self.qparams + sum(l.bias_params for l in self.layers))
        self.other_params = self.total_params - self.qparams
        self.latency_table = latency_table
        self._fp = Choice(FLOAT_BITS, FLOAT_BITS, 0.0)

    # ---- per layer -------------------------------------------------------------------------
    def layer_cost(self, metric: str, layer: LayerInfo, choice: Choice) -> float:
        """Contribution of one layer's choice to ``metric`` (before any constant offset)."""
        if metric == "size":
            return layer.params * choice.effective_w_bits / 8.0
        if metric == "bitops":
            return layer.macs * (1.0 - choice.prune) * float(choice.w_bits) * float(choice.a_bits)
        if metric == "avg_bits":
            return layer.params * choice.effective_w_bits / max(self.qparams, 1)
        if metric == "latency":
            if not self.latency_table:
                raise BudgetError("a latency budget needs a latency table: run `autocomp profile-latency` first")
            row = self.latency_table.get(layer.name, {})
            if choice.key not in row:
                raise BudgetError(f"latency table has no entry for layer {layer.name!r} choice {choice.key}")
            return float(row[choice.key])
        raise BudgetError(f"unknown metric {metric!r}")

    def offset(self, metric: str) -> float:
        """The part of ``metric`` no choice changes (fp32 non-quantizable parameters)."""
        return self.other_params * 4.0 if metric == "size" else 0.0

    # ---- whole policy ----------------------------------------------------------------------
    def cost(self, metric: str, policy: Policy) -> float:
        ch = policy.as_dict()
        return self.offset(metric) + sum(self.layer_cost(metric, l, ch.get(l.name, self._fp)) for l in self.layers)

    def costs(self, policy: Policy, metrics: Sequence[str] = ("size", "bitops", "avg_bits")) -> dict[str, float]:
        out = {m: self.cost(m, policy) for m in metrics if m != "latency" or self.latency_table}
        return out

    def fp32(self, metric: str) -> float:
        """Cost of the uncompressed model (the reference for relative budgets)."""
        return self.offset(metric) + sum(self.layer_cost(metric, l, self._fp) for l in self.layers)

    def satisfies(self, policy: Policy, budget: Budget, tol: float = 1e-9) -> bool:
        return not self.violations(policy, budget, tol)

    def violations(self, policy: Policy, budget: Budget, tol: float = 1e-9) -> list[str]:
        """Constraints the policy breaks, as readable strings (empty when it fits)."""
        bad = []
        for c in budget.constraints:
            v, lim = self.cost(c.metric, policy), c.limit(self)
            if v > lim * (1 + tol) + tol:
                bad.append(f"{c.metric}={self.format(c.metric, v)} > {self.format(c.metric, lim)}")
        return bad

    def format(self, metric: str, value: float) -> str:
        """Human units: size in KB/MB, bitops in G, avg_bits in bits, latency in ms."""
        if metric == "size":
            return f"{value / 1e6:.3f}MB" if value >= 1e6 else f"{value / 1e3:.2f}KB"
        if metric == "bitops":
            return f"{value / 1e9:.4g}G"
        if metric == "avg_bits":
            return f"{value:.3f}"
        if metric == "latency":
            return f"{value * 1e3:.4g}ms"
        return f"{value:g}"

    def relative(self, metric: str, value: float) -> float:
        ref = self.fp32(metric)
        return value / ref if ref else 0.0
