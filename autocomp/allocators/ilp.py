"""Exact allocation by integer linear programming (PuLP; CBC bundled, HiGHS when installed).

One binary per (item, choice) - tied layers are one item -, one choice per item, one linear
constraint per budget metric; minimise the summed omega. Dominated choices are removed first
(see :mod:`autocomp.allocators._problem`) and a sweep reuses one model, changing only the
bounds between points.

- HiGHS (default when ``highspy`` is installed; :mod:`autocomp.allocators._highs`): in process;
  per point the LP relaxation's reduced costs, against an incumbent from the rounded LP
  solution, discard every choice that cannot be in an optimum, and the small MIP left is solved.
- CBC (bundled with PuLP): the model is built once from coefficient lists and warm-started from
  :func:`greedy` or the previous point's solution (feasible, since the sweep's limits grow).

Solver status *and* solution status are both checked: a time-limited solve is reported as not
proven optimal (PuLP #649/#711).

Example:
    >>> from autocomp.allocators import get_allocator
    >>> get_allocator("ilp", time_limit=10).options["time_limit"]
    10
"""
from __future__ import annotations

import warnings

import numpy as np
import pulp

from autocomp.allocators import _highs
from autocomp.allocators._base import Allocator, RawSolution
from autocomp.allocators._problem import Problem
from autocomp.errors import AutocompError


class ILPAllocator(Allocator):
    """Options: ``solver`` ("auto": HiGHS in process when highspy is installed, else CBC;
    "highs"; "cbc"), ``time_limit`` (seconds per point, default none), ``remove_dominated``
    and ``warm_start`` (both default true)."""

    name = "ilp"

    @property
    def solver(self) -> str:
        s = self.options.get("solver", "auto")
        if s == "auto":
            return "highs" if _highs.available() else "cbc"
        if s not in ("highs", "cbc"):
            raise AutocompError(f"unknown ILP solver {s!r}: use auto, highs or cbc")
        if s == "highs" and not _highs.available():
            raise AutocompError("solver 'highs' needs highspy: pip install 'autocomp[highs]'")
        return s

    def _cbc(self, warm: bool):
        tl = self.options.get("time_limit")
        # CBC's default cutoff increment (1e-5 on our scaled objective) lets it stop short of
        # the optimum while still saying "Optimal"; demand the exact optimum instead. The
        # feasibility pump costs most of the time and the warm start makes it redundant.
        opts = ["increment 1e-12", "allowableGap 0", "ratioGap 0", "feas off"]
        with warnings.catch_warnings():
            # PuLP 3.3 deprecates the bundled-CBC class in favour of a CBC on PATH, which a
            # plain `pip install pulp` does not provide; the bundled binary is the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=tl, warmStart=warm, options=opts)

    def _start(self, prob: Problem, lim: dict[str, float], prev: list[int] | None) -> list[int] | None:
        if not self.options.get("warm_start", True):
            return None
        cands = [p for p in (greedy(prob, lim), prev) if p is not None and _fits(prob, p, lim)]
        return min(cands, key=prob.objective) if cands else None

    def _solve_points(self, prob: Problem, limits: list[dict[str, float]]) -> list[RawSolution | None]:
        out: list[RawSolution | None] = []
        prev: list[int] | None = None
        if self.solver == "highs":
            return _highs.solve_points(prob, limits, self.options.get("time_limit"),
                                       bool(self.options.get("warm_start", True)))
        model, x, cons = _build(prob, limits[0])
        for lim in limits:
            for m, con in cons.items():
                con.changeRHS(_scaled(lim[m], m, cons))
            start = self._start(prob, lim, prev)
            if start is not None:
                for i, xs in enumerate(x):
                    for k, v in enumerate(xs):
                        v.setInitialValue(1.0 if k == start[i] else 0.0)
            model.solve(self._cbc(start is not None))
            raw = _read(model, x)
            out.append(raw)
            prev = list(raw.picks) if raw is not None else prev
        return out


def _build(prob: Problem, first: dict[str, float]):
    """The PuLP model from coefficient lists (building through ``lpSum`` of products is ~5x
    slower); constraint rows are normalised by their first limit so CBC sees numbers near one."""
    model = pulp.LpProblem("autocomp", pulp.LpMinimize)
    # PuLP >= 3.3 attaches variables to the model (LpVariable(...) alone is deprecated there).
    new_var = (lambda n: model.add_variable(n, 0, 1, cat="Binary")) if hasattr(model, "add_variable") \
        else (lambda n: pulp.LpVariable(n, cat="Binary"))
    x = [[new_var(f"x_{i}_{k}") for k in range(len(cs))] for i, cs in enumerate(prob.choices)]
    # Omegas are rescaled so CBC's tolerances see numbers of order one.
    scale = max((float(np.abs(o).max()) for o in prob.omega if len(o)), default=1.0) or 1.0
    model += pulp.LpAffineExpression([(v, float(c) / scale) for xs, o in zip(x, prob.omega) for v, c in zip(xs, o)])
    for i, xs in enumerate(x):
        model += pulp.LpConstraint(pulp.LpAffineExpression([(v, 1.0) for v in xs]), pulp.LpConstraintEQ, f"one_{i}", 1.0)
    cons = {}
    for m, lim in first.items():
        norm = max(abs(lim), 1e-30)
        expr = pulp.LpAffineExpression([(v, float(c) / norm) for xs, cc in zip(x, prob.costs[m]) for v, c in zip(xs, cc)])
        model += pulp.LpConstraint(expr, pulp.LpConstraintLE, f"budget_{m}", 1.0)
        get = getattr(model, "get_constraint_by_name", None)
        cons[m] = get(f"budget_{m}") if get else model.constraints[f"budget_{m}"]
        cons[m].norm = norm  # remembered so a new limit is scaled the same way
    return model, x, cons


def _scaled(limit: float, metric: str, cons) -> float:
    return limit / cons[metric].norm + 1e-9


def _fits(prob: Problem, picks: list[int], lim: dict[str, float]) -> bool:
    return all(sum(c[k] for c, k in zip(prob.costs[m], picks)) <= v for m, v in lim.items())


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


def _read(model: pulp.LpProblem, x) -> RawSolution | None:
    status = pulp.LpStatus[model.status]
    sol = model.sol_status
    if status == "Infeasible" or sol == pulp.LpSolutionInfeasible:
        return None
    if sol not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        raise AutocompError(f"ILP solver returned no solution (status {status}, solution status {sol})")
    proven = status == "Optimal" and sol == pulp.LpSolutionOptimal
    picks = tuple(int(np.argmax([v.varValue or 0.0 for v in xs])) for xs in x)
    return RawSolution(picks, proven)
