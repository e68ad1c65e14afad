"""Exact dynamic programming for a single budget (a multiple-choice knapsack).

The DP walks the items (layers; tied layers are one item) and keeps, after each, the Pareto set
of partial solutions: (cost, omega) pairs where no other partial solution is both cheaper and
better. Every optimal policy extends a Pareto-optimal prefix, so the last set holds the optimum
for *every* limit at once: one pass answers a whole sweep (HAWQ-V2's frontier), and a point is a
lookup plus a walk back through stored parent pointers.

Costs are real numbers (1.58-bit weights, pruning ratios), so the states are kept sparse rather
than on an integer grid. When a state set would exceed ``max_states``, costs are discretised:
states are bucketed on a grid of ``max_states`` cells over the remaining capacity and the best
omega per cell survives (its true cost is kept, so feasibility stays exact); the answer is then
reported as not proven optimal.

The DP is exact for additive objectives only: given pairwise terms (``--interactions``) it
refuses in one line and names the ILP, which linearises them exactly.

Example:
    >>> from autocomp.allocators import get_allocator
    >>> get_allocator("dp").max_constraints
    1
"""
from __future__ import annotations

import numpy as np

from autocomp.allocators._base import Allocator, RawSolution
from autocomp.allocators._problem import Problem


class DPAllocator(Allocator):
    """Options: ``max_states`` (default 200000), ``remove_dominated`` (default true)."""

    name = "dp"
    max_constraints = 1

    def _solve_points(self, prob: Problem, limits: list[dict[str, float]]) -> list[RawSolution | None]:
        metric = next(iter(limits[0]))
        max_states = int(self.options.get("max_states", 200_000))
        om, co = prob.omega, prob.costs[metric]
        bounds = SuffixBounds(om, co) if self.options.get("bounds", True) else None
        caps = np.array([lim[metric] for lim in limits])
        # The LP relaxation rounded down is feasible: an upper bound per limit that, with the
        # suffix LP bounds, discards every partial solution that cannot end below it for any
        # of the limits. One pass then answers the whole sweep.
        ubs = None
        if bounds is not None:
            ubs = np.array([np.inf if (u := bounds.rounded_objective(c)) is None else u for c in caps])
        front = pareto_dp(om, co, float(caps.max()), max_states, bounds=bounds, ub=ubs, caps=caps)
        return [front.best(c) for c in caps]


class SuffixBounds:
    """LP-relaxation lower bounds on the omega of items ``i..n-1`` given a remaining capacity.

    For one constraint the relaxation is solved greedily: every item starts at its cheapest
    choice and buys the segments of its lower convex hull in order of omega saved per unit of
    cost (Dyer-Zemel). The bound of a suffix is then a convex piecewise-linear function of the
    capacity, evaluated for a whole state set with one ``np.interp``.
    """

    def __init__(self, omega: list[np.ndarray], costs: list[np.ndarray]):
        n = len(omega)
        self.base_cost = np.zeros(n + 1)
        self.base_obj = np.zeros(n + 1)
        segs: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * (n + 1)
        self.xs: list[np.ndarray] = [np.zeros(1)] * (n + 1)
        self.ys: list[np.ndarray] = [np.zeros(1)] * (n + 1)
        self.items = []
        acc_dc, acc_do = np.zeros(0), np.zeros(0)
        for i in range(n - 1, -1, -1):
            hc, ho = _lower_hull(costs[i], omega[i])
            self.items.append((hc, ho))
            self.base_cost[i] = self.base_cost[i + 1] + hc[0]
            self.base_obj[i] = self.base_obj[i + 1] + ho[0]
            acc_dc = np.concatenate([acc_dc, np.diff(hc)])
            acc_do = np.concatenate([acc_do, np.diff(ho)])
            order = np.argsort(acc_do / acc_dc, kind="stable")   # most omega saved per cost first
            acc_dc, acc_do = acc_dc[order], acc_do[order]
            self.xs[i] = np.concatenate([[0.0], np.cumsum(acc_dc)])
            self.ys[i] = self.base_obj[i] + np.concatenate([[0.0], np.cumsum(acc_do)])
        self.items.reverse()

    def lower(self, i: int, remaining: np.ndarray) -> np.ndarray:
        """Bound for items ``i..`` with ``remaining`` capacity (``inf`` where even their
        cheapest choices do not fit)."""
        r = remaining - self.base_cost[i]
        out = np.interp(r, self.xs[i], self.ys[i])  # flat beyond the last segment
        return np.where(r < -1e-9 * max(1.0, abs(self.base_cost[i])), np.inf, out)

    def rounded_objective(self, cap: float) -> float | None:
        """Omega of the relaxation's solution with its one fractional item rounded down."""
        if cap < self.base_cost[0] - 1e-9 * max(1.0, abs(cap)):
            return None
        x, y = self.xs[0], self.ys[0]
        # A cap a rounding error below the cheapest cost (accepted by the tolerance above) must
        # give the cheapest solution, not wrap round to the last hull point.
        k = max(int(np.searchsorted(x, cap - self.base_cost[0], side="right")) - 1, 0)
        return float(y[min(k, len(y) - 1)])


def _lower_hull(c: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lower-left convex hull of the (cost, omega) points, from the cheapest choice (best
    omega among the cheapest) to the best-omega one, as arrays of costs and omegas."""
    order = np.lexsort((o, c))
    hc, ho = [], []
    for j in order:
        cj, oj = float(c[j]), float(o[j])
        if ho and oj >= ho[-1]:
            continue  # dominated: costs at least as much, no better
        while len(hc) >= 2 and (ho[-1] - ho[-2]) * (cj - hc[-2]) >= (oj - ho[-2]) * (hc[-1] - hc[-2]):
            hc.pop()
            ho.pop()  # the middle point lies on or above the chord
        hc.append(cj)
        ho.append(oj)
    return np.array(hc), np.array(ho)


class ParetoFront:
    """The final Pareto set of a :func:`pareto_dp` run, with parent pointers for backtracking."""

    def __init__(self, cost: np.ndarray, obj: np.ndarray, parents: list[tuple[np.ndarray, np.ndarray]], exact: bool):
        self.cost, self.obj, self.parents, self.exact = cost, obj, parents, exact

    def best(self, limit: float) -> RawSolution | None:
        """Minimum-omega solution with total cost within ``limit`` (``None`` if none fits)."""
        # Same tolerance as the verifier, so a limit equal to a reachable cost (as in a sweep
        # starting at the minimum) is met despite summation order.
        ok = np.flatnonzero(self.cost <= limit + 1e-9 * max(abs(limit), 1.0))
        if not len(ok):
            return None
        s = int(ok[-1])  # costs ascend and omegas strictly descend along the front
        picks = []
        for parent, choice in reversed(self.parents):
            picks.append(int(choice[s]))
            s = int(parent[s])
        return RawSolution(tuple(reversed(picks)), self.exact)


def pareto_dp(omega: list[np.ndarray], costs: list[np.ndarray], cap: float, max_states: int = 200_000,
              bounds: SuffixBounds | None = None, ub=None, caps=None) -> ParetoFront:
    """Pareto-set DP over items with per-choice ``omega`` and ``costs``; states costing more than
    ``cap`` (less what the remaining items need at least) are dropped, and so, given ``bounds``
    and an upper bound ``ub`` on the optimum, are states whose omega plus the LP bound of the
    remaining items exceeds ``ub`` (they cannot lead to an optimum). With ``caps`` (several
    limits, ``ub`` one bound per limit) a state survives if it can still win for any of them.

    Example:
        >>> import numpy as np
        >>> f = pareto_dp([np.array([0.0, 1.0]), np.array([0.0, 2.0])], [np.array([2.0, 1.0])] * 2, cap=3.0)
        >>> f.best(3.0).picks, f.best(2.0).picks
        ((1, 0), (1, 1))
    """
    rest = np.concatenate([np.cumsum([c.min() for c in costs][::-1])[::-1][1:], [0.0]]) if costs else np.zeros(0)
    tol = 1e-9 * max(abs(cap), 1.0)
    cost, obj = np.zeros(1), np.zeros(1)
    parents: list[tuple[np.ndarray, np.ndarray]] = []
    exact = True
    for i, (o, c) in enumerate(zip(omega, costs)):
        nc = (cost[:, None] + c[None, :]).ravel()
        no = (obj[:, None] + o[None, :]).ravel()
        keep = np.flatnonzero(nc + rest[i] <= cap + tol)
        nc, no = nc[keep], no[keep]
        order = np.lexsort((no, nc))            # by cost, then omega
        nc, no, keep = nc[order], no[order], keep[order]
        # Pareto filter: keep a state only if it beats every cheaper (or equally cheap) one.
        prev_best = np.minimum.accumulate(np.concatenate([[np.inf], no[:-1]]))
        sel = no < prev_best
        nc, no, keep = nc[sel], no[sel], keep[sel]
        if bounds is not None and ub is not None:
            cs = np.atleast_1d(np.asarray(caps if caps is not None else cap, dtype=float))
            us = np.atleast_1d(np.asarray(ub, dtype=float))
            tol_u = 1e-9 * np.maximum(1.0, np.abs(np.where(np.isfinite(us), us, 0.0)))
            alive = np.zeros(len(nc), dtype=bool)
            for c_j, u_j, t_j in zip(cs, us, tol_u):  # a handful of limits: a loop keeps memory flat
                alive |= no + bounds.lower(i + 1, c_j - nc) <= u_j + t_j
            nc, no, keep = nc[alive], no[alive], keep[alive]
        if len(nc) > max_states:
            nc, no, keep = _discretise(nc, no, keep, cap - rest[i], max_states)
            exact = False
        parents.append((keep // len(c), keep % len(c)))
        cost, obj = nc, no
    return ParetoFront(cost, obj, parents, exact)


def _discretise(nc: np.ndarray, no: np.ndarray, keep: np.ndarray, span: float, cells: int):
    """Keep the best-omega state per cost cell (costs ascend, omegas descend: the last state of
    each cell is its best)."""
    cell = np.floor(nc / max(span, 1e-300) * cells).astype(np.int64)
    last = np.flatnonzero(np.append(cell[1:] != cell[:-1], True))
    return nc[last], no[last], keep[last]
