"""Incumbents for the exact solvers: a greedy, Lagrangian-rounded feasible policy.

Shared by the CBC path (:mod:`autocomp.allocators.ilp`, warm starts) and the HiGHS path
(:mod:`autocomp.allocators._highs`, the upper bound of reduced-cost fixing).

Example:
    >>> import numpy as np
    >>> from autocomp.allocators._greedy import greedy
    >>> from autocomp.allocators._problem import Problem
    >>> prob = Problem(["a"], [["a"]], [["w2", "w8"]], [np.array([1.0, 0.0])],
    ...                {"size": [np.array([1.0, 4.0])]}, {"size": 0.0})
    >>> greedy(prob, {"size": 2.0}), greedy(prob, {"size": 4.0})
    ([0], [1])
"""
from __future__ import annotations

import numpy as np

from autocomp.allocators._problem import Problem


def fits(prob: Problem, picks, lim: dict[str, float], rtol: float = 0.0) -> bool:
    """Whether ``picks`` keeps every summed item cost within ``lim`` (relative slack ``rtol``)."""
    return all(sum(c[k] for c, k in zip(prob.costs[m], picks)) <= v * (1 + rtol) for m, v in lim.items())


def greedy(prob: Problem, lim: dict[str, float], init: list[int] | None = None,
           steps: int = 500) -> list[int] | None:
    """A feasible, near-optimal policy (an incumbent for the exact solvers).

    From ``init`` (e.g. a rounded LP solution) or else a Lagrangian rounding - every item takes
    the choice minimising omega + t x (summed normalised cost), t bisected to the smallest value
    that meets every constraint -, first repair broken constraints with the swaps that remove
    the most violation per unit of omega, then spend the slack on the swaps that lower omega
    most per unit of normalised cost. ``None`` if the repair gets stuck.
    """
    if not prob.choices:
        return []
    sizes = np.array([len(cs) for cs in prob.choices])
    item = np.repeat(np.arange(len(sizes)), sizes)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    om = np.concatenate(prob.omega)
    cost = np.stack([np.concatenate(prob.costs[m]) / max(lim[m], 1e-300) for m in lim])  # [metrics, vars]
    agg = cost.sum(0)
    ok_tol = 1.0 + 1e-12

    def pick(t: float) -> np.ndarray:
        order = np.lexsort((agg, om + t * agg, item))
        return order[start]  # the first entry of each item's block is its minimiser

    def fits(cur: np.ndarray) -> bool:
        return bool((cost[:, cur].sum(1) <= ok_tol).all())

    if init is not None:
        cur = start + np.asarray(init)
    else:
        lo, hi = 0.0, max(float(np.ptp(om)), 1e-12)
        cur = pick(lo)
        if not fits(cur):
            while not fits(pick(hi)):
                hi *= 4
                if hi > 1e30:
                    return None
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if fits(pick(mid)) else (mid, hi)
            cur = pick(hi)
    used = cost[:, cur].sum(1)
    for _ in range(steps):
        over = used > ok_tol
        if not over.any():
            break
        d_cost = cost - cost[:, cur[item]]
        gain = -(d_cost[over]).sum(0)
        ok = (gain > 1e-15) & ((used[:, None] + d_cost)[~over] <= ok_tol).all(0)
        if not ok.any():
            return None
        d_om = om - om[cur[item]]
        j = int(np.flatnonzero(ok)[np.argmin(np.maximum(d_om[ok], 0.0) / gain[ok])])
        used += d_cost[:, j]
        cur[item[j]] = j
    else:
        return None
    for _ in range(steps):
        d_cost = cost - cost[:, cur[item]]
        d_om = om - om[cur[item]]
        ok = (d_om < 0) & ((used[:, None] + d_cost) <= ok_tol).all(0)
        if not ok.any():
            break
        price = np.maximum(d_cost.sum(0), 0.0) + 1e-12
        j = int(np.flatnonzero(ok)[np.argmax(-d_om[ok] / price[ok])])
        used += d_cost[:, j]
        cur[item[j]] = j
    return [int(c - s) for c, s in zip(cur, start)]
