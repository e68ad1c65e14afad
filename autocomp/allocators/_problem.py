"""The multiple-choice knapsack every allocator solves, in arrays.

Tied layers become one *item* whose choices are their common choices (cost and omega summed), so
no solver needs tie constraints. Choices dominated on (omega, every constrained cost) are removed
per item: they can never be the unique optimum under any limits on those metrics, which makes
the model several times smaller and lets it be reused across a whole sweep.

Example:
    >>> from autocomp.allocators._problem import build_problem
    >>> # prob = build_problem(layers, sens.omega, choices, ties, ["size"], cost_model)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from autocomp.budget import CostModel
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.search_spaces import tie_units


@dataclass
class Problem:
    """Items (layer groups), their surviving choices, and omega / cost arrays per item.

    Attributes:
        names: every layer name in model order (the policy's order).
        items: per item, the layer names it covers (one, or a tie group).
        choices: per item, the choices kept after dominance removal.
        omega: per item, summed omega of each kept choice.
        costs: per metric, per item, summed layer cost of each kept choice (offsets excluded).
        offsets: per metric, the constant part of the cost.
        removed: how many (item, choice) pairs dominance removal dropped.
    """

    names: list[str]
    items: list[list[str]]
    choices: list[list[Choice]]
    omega: list[np.ndarray]
    costs: dict[str, list[np.ndarray]]
    offsets: dict[str, float]
    removed: int = 0

    @property
    def n_vars(self) -> int:
        return sum(len(c) for c in self.choices)

    def min_cost(self, metric: str) -> float:
        """Smallest achievable value of ``metric`` (offset included)."""
        return self.offsets[metric] + float(sum(c.min() for c in self.costs[metric]))

    def policy(self, picks: Sequence[int]) -> Policy:
        """The policy choosing ``choices[i][picks[i]]`` for every layer of item ``i``."""
        by_name = {}
        for item, cs, k in zip(self.items, self.choices, picks):
            for n in item:
                by_name[n] = cs[int(k)]
        return Policy.from_choices([(n, by_name[n]) for n in self.names])

    def objective(self, picks: Sequence[int]) -> float:
        return float(sum(o[int(k)] for o, k in zip(self.omega, picks)))

    def cost(self, metric: str, picks: Sequence[int]) -> float:
        return self.offsets[metric] + float(sum(c[int(k)] for c, k in zip(self.costs[metric], picks)))


def build_problem(layers: Sequence[LayerInfo], omega: Mapping[str, Mapping[str, float]],
                  choices: Mapping[str, list[Choice]], ties: Sequence[Sequence[str]],
                  metrics: Sequence[str], cm: CostModel, remove_dominated: bool = True) -> Problem:
    """Group tied layers, sum their arrays, and drop dominated choices.

    Args:
        choices: per layer, its allowed choices (tied layers must already share one list).
        metrics: the constrained metrics; dominance only looks at these and omega.
    """
    names = [l.name for l in layers]
    by_name = {l.name: l for l in layers}
    items = tie_units(names, ties)
    metrics = list(dict.fromkeys(metrics))
    out_choices, out_omega = [], []
    out_costs: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    removed = 0
    keys_of: dict[int, list[str]] = {}
    for g in items:
        cs = list(choices[g[0]])
        keys = keys_of.setdefault(id(choices[g[0]]), [c.key for c in cs])
        om = np.zeros(len(cs))
        co = {m: np.zeros(len(cs)) for m in metrics}
        for n in g:
            row = omega[n]
            om += np.array([row[k] for k in keys], dtype=float)
            for m in metrics:
                co[m] += cm.layer_costs(m, by_name[n], cs)
        keep = _undominated(om, [co[m] for m in metrics]) if remove_dominated else np.arange(len(cs))
        removed += len(cs) - len(keep)
        out_choices.append([cs[i] for i in keep])
        out_omega.append(om[keep])
        for m in metrics:
            out_costs[m].append(co[m][keep])
    return Problem(names, items, out_choices, out_omega, out_costs,
                   {m: cm.offset(m) for m in metrics}, removed)


def _undominated(omega: np.ndarray, costs: list[np.ndarray]) -> np.ndarray:
    """Indices of choices no other choice beats: j dominates i when j is no worse on omega and
    every cost, and strictly better on one (exact duplicates: the first index survives)."""
    cols = [omega, *costs]
    n = len(omega)
    le = np.ones((n, n), dtype=bool)   # le[j, i]: j no worse than i on every column
    lt = np.zeros((n, n), dtype=bool)  # lt[j, i]: j strictly better on some column
    for v in cols:
        le &= v[:, None] <= v[None, :]
        lt |= v[:, None] < v[None, :]
    earlier = np.triu(np.ones((n, n), dtype=bool), k=1)          # earlier[j, i]: j < i
    dominated = ((le & lt) | (le & ~lt & earlier)).any(axis=0)
    return np.flatnonzero(~dominated)

