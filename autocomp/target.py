"""Quality targets: what ``autocomp search --target`` asks a policy to meet.

A target bounds the workload's quality metric (:mod:`autocomp.metrics`) in its direction:

- ``drop<=1%``: at most 1 % worse than the fp32 model, relative (accuracy >= 0.99 x fp32's;
  perplexity <= 1.01 x fp32's);
- ``drop<=0.5pt``: at most 0.5 percentage points worse, for metrics in [0, 1] such as accuracy
  (``0.5pt`` = 0.005);
- ``accuracy>=0.97`` or ``metric>=0.97`` (the workload's metric, whatever its name): an absolute
  value, the operator in the metric's direction (``perplexity<=20``);
- ``perplexity<=+5%`` / ``accuracy>=-1%``: a signed relative change from fp32 (the same as
  ``drop<=5%`` / ``drop<=1%``).

:func:`parse_target` checks the syntax alone; :meth:`Target.check` checks it against the
workload's quality metric (name, direction, range), so both fail before anything is written.

Example:
    >>> from autocomp.target import parse_target
    >>> t = parse_target("drop<=1%")
    >>> t.check("accuracy")
    >>> round(t.threshold(0.97, "accuracy"), 4), t.met(0.961, 0.97, "accuracy")
    (0.9603, True)
    >>> parse_target("perplexity<=+5%").threshold(20.0, "perplexity")
    21.0
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from autocomp.errors import AutocompError
from autocomp.metrics import get_quality_metric, list_quality_metrics
from autocomp.values import check_version

TARGET_VERSION = 1
_RE = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(<=|>=)\s*([+-]?)\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*(%|pt)?\s*$", re.I)
_EPS = 1e-12  # a measured fraction equal to the threshold up to rounding meets it
_FORMS = "drop<=1%, drop<=0.5pt, accuracy>=0.97 (or metric>=0.97), perplexity<=+5%"


@dataclass(frozen=True)
class Target:
    """A parsed target.

    Attributes:
        kind: ``relative`` (``value`` is a fraction of fp32's quality), ``points`` (``value`` is an
            absolute difference from fp32's quality) or ``absolute`` (``value`` is the threshold).
        value: see ``kind``.
        metric: the quality metric the text names (None for ``drop`` and ``metric``).
        op: ``<=`` or ``>=`` for an ``absolute`` target (how the user bounded the metric).
        text: the target as written.
    """

    kind: str
    value: float
    metric: str | None = None
    op: str = ""
    text: str = ""
    version: int = TARGET_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "kind": self.kind, "value": self.value, "metric": self.metric,
                "op": self.op, "text": self.text}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Target":
        check_version("Target", d, TARGET_VERSION)
        return cls(str(d["kind"]), float(d["value"]), d.get("metric"), str(d.get("op", "")), str(d.get("text", "")))

    def check(self, quality: str) -> None:
        """Raise a one-line :class:`AutocompError` when this target cannot apply to ``quality``
        (the workload's quality metric name): another metric, the wrong direction, out of range."""
        qm = get_quality_metric(quality)
        if self.metric is not None and self.metric != quality:
            raise AutocompError(f"target {self.text!r} names {self.metric}, but this workload measures {quality}: "
                                f"write {quality}{_op(qm)}... or metric{_op(qm)}...")
        if self.op and self.op != _op(qm):
            better = "higher" if qm.higher_is_better else "lower"
            raise AutocompError(f"target {self.text!r} bounds {quality} the wrong way: {better} is better, so "
                                f"bound it with {_op(qm)}")
        if self.kind == "absolute":
            lo, hi = qm.bounds
            if (lo is not None and self.value < lo) or (hi is not None and self.value > hi):
                raise AutocompError(f"target {self.text!r}: {quality} lies in [{_fmt(lo)}, {_fmt(hi)}], so no policy "
                                    "can meet it")
        if self.kind == "points" and qm.bounds != (0.0, 1.0):
            raise AutocompError(f"target {self.text!r}: points (pt) are for metrics in [0, 1], not {quality}; "
                                f"use a relative drop such as drop<=5%")

    def threshold(self, reference: float, quality: str) -> float:
        """The quality a policy must reach, given the fp32 model's ``reference`` quality."""
        qm = get_quality_metric(quality)
        if self.kind == "absolute":
            return self.value
        delta = self.value * abs(reference) if self.kind == "relative" else self.value
        return reference - delta if qm.higher_is_better else reference + delta

    def met(self, value: float, reference: float, quality: str) -> bool:
        """Whether a measured ``value`` meets the target (fp32 measured ``reference``)."""
        thr = self.threshold(reference, quality)
        return value >= thr - _EPS if get_quality_metric(quality).higher_is_better else value <= thr + _EPS

    def describe(self, reference: float, quality: str) -> str:
        """The target as a bound on the metric, e.g. ``accuracy>=0.9603``."""
        return f"{quality}{_op(get_quality_metric(quality))}{self.threshold(reference, quality):.4f}"


def _op(qm) -> str:
    return ">=" if qm.higher_is_better else "<="


def _fmt(v: float | None) -> str:
    return "inf" if v is None else f"{v:g}"


def parse_target(text: str) -> Target:
    """Parse a target (see the module docstring); raises a one-line :class:`AutocompError`.

    Example:
        >>> parse_target("drop<=0.5pt").value
        0.005
    """
    m = _RE.match(text or "")
    if not m:
        raise AutocompError(f"malformed target {text!r}: expected one of {_FORMS}")
    name, op, sign, num, unit = m.groups()
    name, unit, value, term = name.lower(), (unit or "").lower(), float(num), text.strip()
    if name != "drop" and name != "metric" and name not in list_quality_metrics():
        raise AutocompError(f"unknown target metric {name!r} in {term!r}: use drop, metric or one of "
                            f"{', '.join(list_quality_metrics())}")
    if name == "drop":
        if op != "<=" or sign:
            raise AutocompError(f"target {term!r}: a drop is bounded from above, e.g. drop<=1%")
        if unit == "%":
            if value >= 100:
                raise AutocompError(f"target {term!r}: a relative drop is below 100%")
            return Target("relative", value / 100.0, None, "", term)
        if unit == "pt":
            return Target("points", value / 100.0, None, "", term)
        raise AutocompError(f"target {term!r}: give the drop in % (relative) or pt (percentage points)")
    metric = None if name == "metric" else name
    if unit == "pt":
        raise AutocompError(f"target {term!r}: points go with a drop, e.g. drop<=0.5pt")
    if unit == "%":
        # A signed change from fp32 is a drop: worse means down for >= and up for <=.
        if sign != ("-" if op == ">=" else "+"):
            worse = "-" if op == ">=" else "+"
            raise AutocompError(f"target {term!r}: a relative bound is a signed change from fp32, e.g. "
                                f"{name}{op}{worse}{value:g}% (or drop<={value:g}%)")
        if value >= 100:
            raise AutocompError(f"target {term!r}: a relative change is below 100%")
        return Target("relative", value / 100.0, metric, op, term)
    if sign:
        raise AutocompError(f"target {term!r}: a signed bound is relative to fp32: add %, e.g. "
                            f"{name}{op}{sign}{value:g}%")
    return Target("absolute", value, metric, op, term)
