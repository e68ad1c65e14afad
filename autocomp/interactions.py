"""Measured inter-layer interactions: how much worse two layers compressed together are than the
sum of each compressed alone.

The additive model (:class:`~autocomp.sensitivity.Sensitivity`) predicts a policy's degradation
as the sum of per-layer omegas, each measured (or estimated) with *that layer alone* compressed
and every other layer in float. Interactions keep that reference: every probe compresses one
layer (a *single*) or two layers (a *pair*) and leaves the rest float, and the interaction term
of a pair at choices ``(a, b)`` is

    term = D(i at a, j at b) - D(i at a) - D(j at b)

with ``D`` the measured degradation of the workload's quality metric against the float model
(``reference - quality`` for higher-is-better metrics, ``quality - reference`` otherwise).

Which pairs (:func:`plan_pairs`): the ``k`` layers most sensitive by the stored sensitivity (a
layer's sensitivity is its largest omega over its allowed choices), every pair among them, and
each one with its neighbours in execution order (the previous and next profiled layer: the
layers on the same residual path that a quantisation error flows into). Which choices: each
layer's ``per_layer`` most aggressive choices (fewest stored bits per weight, then fewest
activation bits), since that is where errors are large enough to interact; pairs of other
choices keep the additive prediction (term 0). Tied layers are measured at equal choices only.

Terms reach the allocator in omega units (:meth:`Interactions.pairwise`): the measured singles
fit one scale ``s`` with ``D(i at a) ~ s * omega(i, a)`` (least squares through the origin), and
each term is divided by ``s``, so the ILP minimises ``sum omega + sum term / s``.

Example:
    >>> from autocomp.interactions import Interactions
    >>> it = Interactions("loss_delta", 2, 2, "accuracy", 0.9, {"a": {"w2a8": 0.8}, "b": {"w2a8": 0.85}},
    ...                   {("a", "b"): {("w2a8", "w2a8"): 0.6}})
    >>> round(it.terms()[("a", "b")][("w2a8", "w2a8")], 6)   # 0.3 drop together vs 0.1 + 0.05 alone
    0.15
    >>> Interactions.from_dict(it.to_dict()) == it
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from autocomp.errors import AutocompError
from autocomp.metrics import get_quality_metric
from autocomp.policy import FLOAT_CHOICE, Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.sensitivity import Sensitivity
from autocomp.values import check_version

INTERACTIONS_VERSION = 1

#: pairwise terms as the allocators take them: (layer_i, layer_j) -> (choice_key_i, choice_key_j) -> value
PairTerms = Mapping[tuple[str, str], Mapping[tuple[str, str], float]]


def aggressiveness(c: Choice) -> tuple[float, float, float]:
    """Sort key: most compressed first (fewest stored bits per weight, then activation bits)."""
    return (c.effective_w_bits, float(c.a_bits), -c.prune)


@dataclass(frozen=True)
class PairPlan:
    """What :func:`plan_pairs` chose to measure.

    Attributes:
        choices: per measured layer, the choices measured (most aggressive first).
        pairs: per measured pair (execution order), its choice pairs.
    """

    choices: dict[str, tuple[Choice, ...]]
    pairs: dict[tuple[str, str], tuple[tuple[Choice, Choice], ...]]

    @property
    def evaluations(self) -> int:
        """Probes the plan needs (singles and pairs, the float reference excluded)."""
        return sum(len(c) for c in self.choices.values()) + sum(len(c) for c in self.pairs.values())


def layer_sensitivity(sens: Sensitivity, layer: str, choices: Sequence[Choice]) -> float:
    """A layer's sensitivity for ranking: its largest omega over its allowed choices."""
    return max((sens.of(layer, c.key) for c in choices), default=0.0)


def plan_pairs(layers: Sequence[LayerInfo], sens: Sensitivity, choices: Mapping[str, Sequence[Choice]],
               ties: Sequence[Sequence[str]], k: int, per_layer: int = 2) -> PairPlan:
    """The pairs and choices to measure for the ``k`` most sensitive layers (see the module doc).

    Layers with one allowed choice are left out: a term on them only shifts a constant or the
    other layer's omega, which its own single already measures.

    Example:
        >>> # plan = plan_pairs(ctx.layers, sens, ctx.space.choices(ctx.layers), [], k=3)
    """
    order = sorted(layers, key=lambda l: l.index)
    names = [l.name for l in order if len(choices[l.name]) > 1]
    pos = {n: i for i, n in enumerate(names)}
    ranked = sorted(names, key=lambda n: (-layer_sensitivity(sens, n, choices[n]), pos[n]))
    top = ranked[:max(0, k)]
    wanted: set[tuple[str, str]] = set()
    for a in top:
        for b in top:
            if pos[a] < pos[b]:
                wanted.add((a, b))
        for d in (-1, 1):
            j = pos[a] + d
            if 0 <= j < len(names):
                wanted.add(tuple(sorted((a, names[j]), key=pos.__getitem__)))
    tied = {n: i for i, g in enumerate(ties) for n in g}
    pick = {n: tuple(sorted(choices[n], key=aggressiveness)[:per_layer]) for p in wanted for n in p}
    pairs = {}
    for a, b in sorted(wanted, key=lambda p: (pos[p[0]], pos[p[1]])):
        same = a in tied and tied.get(a) == tied.get(b)
        pairs[(a, b)] = tuple((ca, cb) for ca in pick[a] for cb in pick[b] if not same or ca == cb)
    return PairPlan({n: pick[n] for n in sorted(pick, key=pos.__getitem__)}, pairs)


def probe(names: Sequence[str], compressed: Mapping[str, Choice]) -> Policy:
    """The policy compressing only ``compressed`` (every other layer float): one probe."""
    return Policy.from_choices([(n, compressed.get(n, FLOAT_CHOICE)) for n in names])


@dataclass(frozen=True)
class Interactions:
    """Measured singles and pairs (qualities as evaluated), with how they were chosen.

    Attributes:
        source: the sensitivity (its stored key) that ranked the layers.
        k: the number of most sensitive layers; ``per_layer``: measured choices per layer.
        quality_metric: the workload's quality metric (its direction gives the degradation).
        reference: the float model's quality.
        singles: layer -> choice key -> quality with that layer alone compressed.
        pairs: (layer_i, layer_j) -> (key_i, key_j) -> quality with both compressed.
    """

    source: str
    k: int
    per_layer: int
    quality_metric: str
    reference: float
    singles: dict[str, dict[str, float]]
    pairs: dict[tuple[str, str], dict[tuple[str, str], float]]
    version: int = field(default=INTERACTIONS_VERSION)

    @property
    def key(self) -> str:
        """What a study stores these under (one set per sensitivity, ``k`` and choice rule)."""
        return interactions_key(self.source, self.k, self.per_layer)

    def drop(self, quality: float) -> float:
        """Degradation of ``quality`` against the float reference (positive: worse)."""
        higher = get_quality_metric(self.quality_metric).higher_is_better
        return self.reference - quality if higher else quality - self.reference

    def terms(self) -> dict[tuple[str, str], dict[tuple[str, str], float]]:
        """Measured joint degradation minus the sum of singles, per pair and choice pair."""
        return {p: {(ca, cb): self.drop(q) - self.drop(self.singles[p[0]][ca]) - self.drop(self.singles[p[1]][cb])
                    for (ca, cb), q in row.items()} for p, row in self.pairs.items()}

    def scale(self, sens: Sensitivity) -> float:
        """``s`` with measured single drops ~ ``s * omega`` (least squares through the origin).

        Raises:
            AutocompError: the sensitivity does not rise with the measured drops (``s <= 0``),
                so its units cannot be matched.
        """
        num = den = 0.0
        for n, row in self.singles.items():
            for key, q in row.items():
                o = sens.of(n, key)
                num += o * self.drop(q)
                den += o * o
        s = num / den if den > 0 else 0.0
        if not s > 0:
            raise AutocompError(f"sensitivity {sens.proxy!r} does not rise with the measured single-layer drops "
                                "(fitted scale <= 0): its interaction terms cannot be put in its units; "
                                "use another --proxy")
        return s

    def pairwise(self, sens: Sensitivity) -> dict[tuple[str, str], dict[tuple[str, str], float]]:
        """The terms in ``sens``'s omega units, as :meth:`Allocator.solve` takes them."""
        s = self.scale(sens)
        return {p: {c: v / s for c, v in row.items()} for p, row in self.terms().items()}

    def predict(self, sens: Sensitivity, policy: Policy, pairwise: bool = True) -> float:
        """Predicted degradation of ``policy`` in measured units: ``s * sum omega`` (additive),
        plus the measured terms of every pair whose two layers take measured choices."""
        s = self.scale(sens)
        out = s * sens.predict(policy)
        if pairwise:
            pol = policy.as_dict()
            for (a, b), row in self.terms().items():
                if a in pol and b in pol:
                    out += row.get((pol[a].key, pol[b].key), 0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source, "k": self.k, "per_layer": self.per_layer,
                "quality_metric": self.quality_metric, "reference": self.reference, "singles": self.singles,
                "pairs": [[a, b, ca, cb, q] for (a, b), row in self.pairs.items() for (ca, cb), q in row.items()]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Interactions":
        """Rebuild from :meth:`to_dict`; another ``version`` raises a one-line error."""
        check_version("Interactions", d, INTERACTIONS_VERSION)
        pairs: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
        for a, b, ca, cb, q in d["pairs"]:
            pairs.setdefault((a, b), {})[(ca, cb)] = float(q)
        return cls(d["source"], int(d["k"]), int(d["per_layer"]), d["quality_metric"], float(d["reference"]),
                   {n: {k: float(v) for k, v in row.items()} for n, row in d["singles"].items()}, pairs)


def interactions_key(source: str, k: int, per_layer: int) -> str:
    """The stored name of the interactions measured for ``source`` with ``k`` and ``per_layer``."""
    return f"{source}/k{k}/c{per_layer}"
