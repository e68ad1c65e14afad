"""The multiple-choice knapsack every allocator solves, in arrays.

Tied layers become one *item* whose choices are their common choices (cost and omega summed), so
no solver needs tie constraints. Choices dominated on (omega, every constrained cost) are removed
per item: they can never be the unique optimum under any limits on those metrics, which makes
the model several times smaller and lets it be reused across a whole sweep.

Pairwise terms (measured interactions, :mod:`autocomp.interactions`) become one matrix per pair
of items, ``pairs[(i, j)][a, b]`` added to the objective when item ``i`` takes choice ``a`` and
item ``j`` choice ``b``; a term between two layers of one tie group can only apply at equal
choices and is folded into that item's omega. An item with a pairwise term keeps all its
choices: a choice worse alone may interact better.

Example:
    >>> from autocomp.allocators._problem import build_problem
    >>> # prob = build_problem(layers, sens.omega, choices, ties, ["size"], cost_model)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from autocomp.budget import CostModel
from autocomp.errors import AutocompError
from autocomp.interactions import PairTerms
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
        pairs: ``(i, j, Q)`` with items ``i < j`` and ``Q[a, b]`` the pairwise term of their
            choices ``a``, ``b`` (nonzero somewhere); empty for an additive problem.
    """

    names: list[str]
    items: list[list[str]]
    choices: list[list[Choice]]
    omega: list[np.ndarray]
    costs: dict[str, list[np.ndarray]]
    offsets: dict[str, float]
    removed: int = 0
    pairs: list[tuple[int, int, np.ndarray]] = field(default_factory=list)

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
        out = float(sum(o[int(k)] for o, k in zip(self.omega, picks)))
        return out + float(sum(q[int(picks[i]), int(picks[j])] for i, j, q in self.pairs))

    def cost(self, metric: str, picks: Sequence[int]) -> float:
        return self.offsets[metric] + float(sum(c[int(k)] for c, k in zip(self.costs[metric], picks)))


def build_problem(layers: Sequence[LayerInfo], omega: Mapping[str, Mapping[str, float]],
                  choices: Mapping[str, list[Choice]], ties: Sequence[Sequence[str]],
                  metrics: Sequence[str], cm: CostModel, remove_dominated: bool = True,
                  pairwise: PairTerms | None = None) -> Problem:
    """Group tied layers, sum their arrays, and drop dominated choices.

    Args:
        choices: per layer, its allowed choices (tied layers must already share one list).
        metrics: the constrained metrics; dominance only looks at these and omega.
        pairwise: (layer_i, layer_j) -> (choice_key_i, choice_key_j) -> term, added to the
            objective when both layers take those choices; keys no layer allows are ignored.
    """
    names = [l.name for l in layers]
    by_name = {l.name: l for l in layers}
    items = tie_units(names, ties)
    item_of = {n: i for i, g in enumerate(items) for n in g}
    for pair in (pairwise or {}):
        for n in pair:
            if n not in item_of:
                raise AutocompError(f"the interaction terms name layer {n!r}, which the model does not have")
    paired = {item_of[n] for pair, row in (pairwise or {}).items() if any(row.values()) for n in pair}
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
        prunable = remove_dominated and item_of[g[0]] not in paired
        keep = _undominated(om, [co[m] for m in metrics]) if prunable else np.arange(len(cs))
        removed += len(cs) - len(keep)
        out_choices.append([cs[i] for i in keep])
        out_omega.append(om[keep])
        for m in metrics:
            out_costs[m].append(co[m][keep])
    pairs = _pair_matrices(pairwise or {}, item_of, out_choices, out_omega)
    return Problem(names, items, out_choices, out_omega, out_costs,
                   {m: cm.offset(m) for m in metrics}, removed, pairs)


def _pair_matrices(pairwise: PairTerms, item_of: dict[str, int], choices: list[list[Choice]],
                   omega: list[np.ndarray]) -> list[tuple[int, int, np.ndarray]]:
    """One matrix per pair of items (terms of several layer pairs on one item pair summed);
    terms within one item go to its omega (in place), at equal choices only."""
    index = [{c.key: k for k, c in enumerate(cs)} for cs in choices]
    mats: dict[tuple[int, int], np.ndarray] = {}
    for (la, lb), row in pairwise.items():
        (i, ka_at), (j, kb_at) = sorted([(item_of[la], 0), (item_of[lb], 1)])
        for keys, v in row.items():
            a, b = index[i].get(keys[ka_at]), index[j].get(keys[kb_at])
            if a is None or b is None or not v:
                continue
            if i == j:
                if a == b:
                    omega[i][a] += float(v)
                continue
            q = mats.setdefault((i, j), np.zeros((len(choices[i]), len(choices[j]))))
            q[a, b] += float(v)
    return [(i, j, q) for (i, j), q in sorted(mats.items()) if q.any()]


def pair_terms(prob: Problem) -> list[tuple[int, int, int, int, float]]:
    """Every nonzero pairwise term as ``(item_i, item_j, choice_a, choice_b, value)``: one
    auxiliary variable each in the linearised ILP."""
    return [(i, j, int(a), int(b), float(q[a, b])) for i, j, q in prob.pairs for a, b in zip(*np.nonzero(q))]


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

