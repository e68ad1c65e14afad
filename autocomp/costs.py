"""Cost metrics: what a budget can bound and a front can trade quality against.

Each metric is a small :class:`CostMetric` registered by name. It knows its budget units, its
cost per layer for every choice at once (a NumPy vector, what the allocators' arrays are built
from), the constant part no choice changes, its fp32 reference and how to print a value. Budgets
(:mod:`autocomp.budget`), allocators, fronts, tables and plots take all of that from here, so a
new metric is one class and one :func:`register_cost_metric` call.

Built in: ``size`` (bytes), ``bitops``, ``avg_bits`` and ``latency`` (seconds, from a measured
per-layer table).

Example (a metric counting the weights a policy keeps, then a budget on it):
    >>> import numpy as np
    >>> from autocomp.costs import CostMetric, register_cost_metric
    >>> class KeptWeights(CostMetric):
    ...     name = "kept"
    ...     units = {"": 1.0, "k": 1e3, "m": 1e6}
    ...     unit_help = "%, or a count with K/M"
    ...     def layer_costs(self, layer, choices, ctx):
    ...         return layer.params * (1.0 - np.array([c.prune for c in choices]))
    >>> _ = register_cost_metric(KeptWeights())
    >>> from autocomp.budget import parse_budget
    >>> parse_budget("kept<=20K").constraints[0].value
    20000.0
    >>> from autocomp.costs import unregister_cost_metric
    >>> unregister_cost_metric("kept")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from autocomp.errors import AutocompError, BudgetError
from autocomp.policy import FLOAT_CHOICE
from autocomp.quant import group_count, is_float
from autocomp.registry import Registry

if TYPE_CHECKING:
    from autocomp.policy import Choice
    from autocomp.layout import FileLayout
    from autocomp.profile import LayerInfo


@dataclass(frozen=True)
class CostContext:
    """What a metric may read besides a layer and its choices.

    Attributes:
        layers: every quantizable layer of the model.
        qparams: their weights in total.
        other_params: every other parameter (biases, norms, embeddings), kept in fp32.
        inputs: extra measured inputs by name (``latency_table``: ``{layer: {choice_key: s}}``).
        layout: the model-wide part of a checkpoint's size (:class:`autocomp.layout.FileLayout`).
            Set, ``size`` counts the bytes of the checkpoint file; None keeps the accounting of
            studies created before checkpoints existed (codes and group metadata only).
    """

    layers: tuple["LayerInfo", ...]
    qparams: int
    other_params: int
    inputs: Mapping[str, Any] = field(default_factory=dict)
    layout: "FileLayout | None" = None


class CostMetric:
    """Base class: set ``name`` (and units), implement :meth:`layer_costs`.

    Class attributes:
        name: the budget's and the study's word for it.
        units: budget unit suffix (lower case) -> factor to absolute units; ``%`` (of the fp32
            model's cost) is accepted for every metric.
        unit_help: what the units are, for the error on a bad one.
        needs: names in :attr:`CostContext.inputs` the metric cannot do without.
        reported: stored with every policy of a study (when ``needs`` are there).
        percent: fronts show it as a percentage of fp32 (tables, plots).
        title: table column; axis_label: plot axis.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    units: ClassVar[Mapping[str, float]] = {"": 1.0}
    unit_help: ClassVar[str] = "% or a plain number"
    needs: ClassVar[tuple[str, ...]] = ()
    reported: ClassVar[bool] = False
    percent: ClassVar[bool] = False
    title: ClassVar[str] = ""
    axis_label: ClassVar[str] = ""

    # --- to implement -------------------------------------------------------------------------
    def layer_costs(self, layer: "LayerInfo", choices: Sequence["Choice"], ctx: CostContext) -> np.ndarray:
        """One layer's contribution for each of ``choices`` (before :meth:`offset`)."""
        raise NotImplementedError  # pragma: no cover - abstract

    # --- defaults -----------------------------------------------------------------------------
    def layer_cost(self, layer: "LayerInfo", choice: "Choice", ctx: CostContext) -> float:
        """One layer's contribution for one choice."""
        return float(self.layer_costs(layer, [choice], ctx)[0])

    def offset(self, ctx: CostContext) -> float:
        """The part of the cost no choice changes."""
        return 0.0

    def fp32(self, ctx: CostContext) -> float:
        """The uncompressed model's cost: the reference of ``%`` budgets."""
        return self.offset(ctx) + sum(self.layer_cost(l, FLOAT_CHOICE, ctx) for l in ctx.layers)

    def available(self, ctx: CostContext) -> bool:
        """Whether ``ctx`` holds every input the metric needs."""
        return all(ctx.inputs.get(n) for n in self.needs)

    def parse(self, value: float, unit: str, term: str) -> float:
        """An absolute budget bound from ``value`` in ``unit`` (lower case, not ``%``)."""
        if unit not in self.units:
            raise BudgetError(f"budget term {term!r}: {self.name} takes {self.unit_help}")
        return value * self.units[unit]

    def format(self, value: float) -> str:
        """``value`` in human units (messages, tables)."""
        return f"{value:g}"

    def describe(self, value: float, fp32: float) -> str:
        """``value`` for a message, with its share of fp32."""
        return f"{self.format(value)} ({value / fp32:.1%} of fp32)" if fp32 else self.format(value)

    def axis(self, value: float, fp32: float | None) -> float:
        """``value`` as a plot draws it (% of fp32 when :attr:`percent`)."""
        return 100.0 * value / fp32 if self.percent and fp32 else value

    @property
    def column(self) -> str:
        return self.title or self.name

    @property
    def label(self) -> str:
        return self.axis_label or self.column


def _w_keep(choices: Sequence["Choice"]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([float(c.w_bits) for c in choices]), 1.0 - np.array([c.prune for c in choices])


SCALE_BITS = 16  # one fp16 scale per group


def meta_bits(layer: "LayerInfo", choice: "Choice") -> float:
    """Bits a checkpoint stores besides the codes: per group one fp16 scale, plus one zero point
    of ``w_bits`` bits (packed like the codes, as GPTQ checkpoints do) when asymmetric.

    Per-channel symmetric choices count none here: this is the accounting of studies created
    before checkpoints existed (a study with a :class:`~autocomp.layout.FileLayout` counts every
    scale, :mod:`autocomp.layout`); a float choice stores no scale.

    Example:
        >>> from autocomp.policy import Choice
        >>> from autocomp.profile import LayerInfo
        >>> l = LayerInfo("fc", "Linear", (64, 256), 64 * 256, 0, 0, (256,), (64,), 0)
        >>> meta_bits(l, Choice(4, 32, group=128)), meta_bits(l, Choice(4, 32, group=128, zero_point=True))
        (2048.0, 2560.0)
    """
    if is_float(choice.w_bits) or (choice.group is None and not choice.zero_point):
        return 0.0
    rows = layer.weight_shape[0] if layer.weight_shape else 1
    k = layer.params // max(rows, 1)
    per_group = SCALE_BITS + (float(choice.w_bits) if choice.zero_point else 0.0)
    return float(rows * group_count(k, choice.group) * per_group)


def _meta(layer: "LayerInfo", choices: Sequence["Choice"]) -> np.ndarray:
    return np.array([meta_bits(layer, c) for c in choices])


def _file_bytes(layer: "LayerInfo", choices: Sequence["Choice"], ctx: "CostContext") -> np.ndarray:
    from autocomp.layout import layer_bytes

    return np.array([float(layer_bytes(layer, c, ctx.layout.offset_digits)) for c in choices])


class Size(CostMetric):
    """Bytes: quantizable weights at their bits (pruned weights dropped), every other parameter in
    fp32. A tied weight (embedding and head) is one layer, so it is counted once.

    With a :class:`~autocomp.layout.FileLayout` in the context (every study created since
    checkpoints exist) it counts the bytes of the file ``front export --format checkpoint``
    writes (:mod:`autocomp.layout`): codes with their word padding, every scale and zero point,
    the positions of pruned weights, the other tensors and buffers, and the header. Without one,
    the accounting of earlier studies: codes, group scales and zero points (:func:`meta_bits`)
    and other parameters in fp32, so their stored sizes and allocations stay what they were."""

    name = "size"
    units = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
    unit_help = "%, B, KB, MB, GB, KiB, MiB or GiB"
    reported = percent = True
    axis_label = "size (% of fp32)"

    # "+ meta" adds an exact 0.0 for per-channel symmetric choices: their numbers keep every bit.
    def layer_costs(self, layer, choices, ctx):
        if ctx.layout is not None:
            return _file_bytes(layer, choices, ctx)
        w, keep = _w_keep(choices)
        return (layer.params * w * keep + _meta(layer, choices)) / 8.0

    def layer_cost(self, layer, choice, ctx):
        if ctx.layout is not None:
            return float(_file_bytes(layer, [choice], ctx)[0])
        return (layer.params * choice.effective_w_bits + meta_bits(layer, choice)) / 8.0

    def offset(self, ctx):
        return float(ctx.layout.other_bytes) if ctx.layout is not None else ctx.other_params * 4.0

    def format(self, value):
        return f"{value / 1e6:.3f}MB" if value >= 1e6 else f"{value / 1e3:.2f}KB"


class BitOps(CostMetric):
    """Sum over layers of MACs x (1 - prune) x w_bits x a_bits (float = 32 bits)."""

    name = "bitops"
    units = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    unit_help = "%, or a count with K/M/G/T"
    reported = percent = True
    title, axis_label = "BitOps", "BitOps (% of fp32)"

    def layer_costs(self, layer, choices, ctx):
        w, keep = _w_keep(choices)
        return layer.macs * keep * w * np.array([float(c.a_bits) for c in choices])

    def format(self, value):
        return f"{value / 1e9:.4g}G"


class AvgBits(CostMetric):
    """Stored bits per quantizable weight: w_bits x (1 - prune) plus group scales and zero points
    (:func:`meta_bits`), parameter-weighted over the quantizable layers."""

    name = "avg_bits"
    units = {"": 1, "b": 1, "bits": 1}
    unit_help = "a plain number of bits"
    reported = True
    title, axis_label = "avg bits", "average weight bits"

    def layer_costs(self, layer, choices, ctx):
        w, keep = _w_keep(choices)
        return (layer.params * w * keep + _meta(layer, choices)) / max(ctx.qparams, 1)

    def layer_cost(self, layer, choice, ctx):
        return (layer.params * choice.effective_w_bits + meta_bits(layer, choice)) / max(ctx.qparams, 1)

    def format(self, value):
        return f"{value:.3f}"

    def describe(self, value, fp32):
        return self.format(value)  # a share of 32 bits says nothing the bits do not


class Latency(CostMetric):
    """Sum of per-layer latencies from a measured table ``{layer: {choice_key: seconds}}``."""

    name = "latency"
    units = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
    unit_help = "%, s, ms or us"
    needs = ("latency_table",)
    reported = True
    axis_label = "latency (ms)"

    def layer_costs(self, layer, choices, ctx):
        return np.array([self.layer_cost(layer, c, ctx) for c in choices])

    def layer_cost(self, layer, choice, ctx):
        table = ctx.inputs.get("latency_table")
        if not table:
            raise BudgetError("a latency budget needs a latency table: run `autocomp profile-latency` first")
        row = table.get(layer.name, {})
        if choice.key not in row:
            raise BudgetError(f"latency table has no entry for layer {layer.name!r} choice {choice.key}")
        return float(row[choice.key])

    def format(self, value):
        return f"{value * 1e3:.4g}ms"

    def axis(self, value, fp32):
        return value * 1e3


# Registration order is the order of table columns.
_COSTS: Registry[CostMetric] = Registry("cost metric", ordered=True)


def register_cost_metric(metric: CostMetric) -> CostMetric:
    """Register ``metric`` under its name (replacing one of that name); budgets can bound it."""
    if not metric.name or not metric.name.replace("_", "").isalpha() or metric.name != metric.name.lower():
        raise AutocompError(f"a cost metric needs a lower-case name of letters and '_', not {metric.name!r}")
    _COSTS.register(metric.name, metric)
    return metric


def unregister_cost_metric(name: str) -> None:
    _COSTS.unregister(name)


def get_cost_metric(name: str) -> CostMetric:
    return _COSTS.get(name)


def cost_metric_names() -> list[str]:
    """Registered names, in registration order (the order of table columns)."""
    return _COSTS.names()


def reported_metrics() -> list[CostMetric]:
    """The metrics every study stores and every front shows (when their inputs exist)."""
    return [m for m in map(_COSTS.get, _COSTS.names()) if m.reported]


for _m in (Size(), BitOps(), AvgBits(), Latency()):
    register_cost_metric(_m)
