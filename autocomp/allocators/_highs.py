"""The ILP on HiGHS in process (``pip install highspy``): the model is passed once as arrays and a
sweep only moves the first constraint's bound between solves - no model file, no subprocess.

Gaps are set to zero: HiGHS' defaults (relative gap 1e-4) would call a solution within 0.01 % of
the bound "optimal", which the contract tests would rightly catch.
"""
from __future__ import annotations

import numpy as np

from autocomp.allocators._base import RawSolution
from autocomp.allocators._greedy import fits, greedy
from autocomp.allocators._problem import Problem, pair_terms
from autocomp.errors import AutocompError


def available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def _new_highs(highspy):
    """A Highs instance without its copyright banner, which the C++ side writes straight to
    file descriptor 1 and would corrupt ``autocomp search --json`` output."""
    import os
    import sys

    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


class HighsModel:
    """One HiGHS instance holding the problem; :meth:`solve` takes a limit per metric."""

    def __init__(self, prob: Problem, first: dict[str, float], time_limit: float | None = None,
                 integer: bool = True):
        import highspy

        self.hs = highspy
        self.prob = prob
        h = self.h = _new_highs(highspy)
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_abs_gap", 0.0)
        h.setOptionValue("threads", 1)
        if time_limit is not None:
            h.setOptionValue("time_limit", float(time_limit))
        sizes = np.array([len(c) for c in prob.choices], dtype=np.int64)
        n = int(sizes.sum())
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        om = np.concatenate(prob.omega) if n else np.zeros(0)
        terms = pair_terms(prob)
        scale = max([float(np.abs(om).max()) if n else 0.0, *(abs(t[4]) for t in terms)]) or 1.0
        inf = highspy.kHighsInf
        self.scale = scale
        # The relaxation has no upper bounds (the one-hot rows imply them), so every reduced
        # cost at its optimum is >= 0 and bounds what taking that choice costs at least.
        h.addVars(n, np.zeros(n), np.ones(n) if integer else np.full(n, inf))
        h.changeColsCost(n, np.arange(n, dtype=np.int32), om / scale)
        if integer:
            h.changeColsIntegrality(n, np.arange(n, dtype=np.int32),
                                    np.full(n, highspy.HighsVarType.kInteger))
        # One-hot rows: each item takes exactly one choice.
        k = len(sizes)
        h.addRows(k, np.ones(k), np.ones(k), n, self.start.astype(np.int32),
                  np.arange(n, dtype=np.int32), np.ones(n))
        self.rows, self.norm = {}, {}
        for m, lim in first.items():
            self.norm[m] = max(abs(lim), 1e-30)
            coef = np.concatenate(prob.costs[m]) / self.norm[m]
            self.rows[m] = h.getNumRow()
            h.addRow(-inf, 1.0 + 1e-9, n, np.arange(n, dtype=np.int32), coef)
        self.sizes = sizes
        self.terms = terms
        if terms:
            self._linearise(terms, n, integer)

    def _linearise(self, terms, n: int, integer: bool) -> None:
        """One binary y per pairwise term: y <= x_ia, y <= x_jb, y >= x_ia + x_jb - 1."""
        h, inf = self.h, self.hs.kHighsInf
        t = len(terms)
        cols = np.arange(n, n + t, dtype=np.int32)
        h.addVars(t, np.zeros(t), np.ones(t))
        h.changeColsCost(t, cols, np.array([v for *_, v in terms]) / self.scale)
        if integer:
            h.changeColsIntegrality(t, cols, np.full(t, self.hs.HighsVarType.kInteger))
        for y, (i, j, a, b, _) in zip(cols, terms):
            xa, xb = int(self.start[i] + a), int(self.start[j] + b)
            h.addRow(-inf, 0.0, 2, np.array([y, xa], dtype=np.int32), np.array([1.0, -1.0]))
            h.addRow(-inf, 0.0, 2, np.array([y, xb], dtype=np.int32), np.array([1.0, -1.0]))
            h.addRow(-1.0, inf, 3, np.array([y, xa, xb], dtype=np.int32), np.array([1.0, -1.0, -1.0]))

    def solve(self, lim: dict[str, float], start: list[int] | None) -> RawSolution | None:
        h, hs = self.h, self.hs
        for m, v in lim.items():
            h.changeRowBounds(self.rows[m], -hs.kHighsInf, v / self.norm[m] + 1e-9)
        if start is not None:
            sol = hs.HighsSolution()
            x = np.zeros(int(self.sizes.sum()) + len(self.terms))
            x[self.start + np.asarray(start, dtype=np.int64)] = 1.0
            for y, (i, j, a, b, _) in enumerate(self.terms, start=int(self.sizes.sum())):
                x[y] = float(start[i] == a and start[j] == b)
            sol.col_value = list(x)
            h.setSolution(sol)
        h.run()
        status = h.getModelStatus()
        if status == hs.HighsModelStatus.kInfeasible:
            return None
        info = h.getInfo()
        has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
        if not has_sol and start is not None:
            return RawSolution(tuple(start), False)  # stopped (time limit) before bettering it
        if not has_sol:
            raise AutocompError(f"HiGHS returned no solution (status {h.modelStatusToString(status)})")
        x = np.asarray(h.getSolution().col_value)
        picks = tuple(int(np.argmax(x[s:s + z])) for s, z in zip(self.start, self.sizes))
        return RawSolution(picks, status == hs.HighsModelStatus.kOptimal)

    def relax(self, lim: dict[str, float]):
        """Solve the LP relaxation at ``lim``: (bound in omega units, reduced costs in omega
        units, primal x), or None when even the relaxation is infeasible. Simplex restarts from
        the previous basis, so a sweep pays little per point."""
        h, hs = self.h, self.hs
        for m, v in lim.items():
            h.changeRowBounds(self.rows[m], -hs.kHighsInf, v / self.norm[m] + 1e-9)
        h.run()
        status = h.getModelStatus()
        if status == hs.HighsModelStatus.kInfeasible:
            return None
        if status != hs.HighsModelStatus.kOptimal:
            raise AutocompError(f"HiGHS could not solve the relaxation (status {h.modelStatusToString(status)})")
        sol = h.getSolution()
        bound = h.getInfo().objective_function_value * self.scale
        return bound, np.maximum(np.asarray(sol.col_dual), 0.0) * self.scale, np.asarray(sol.col_value)


def solve_points(prob: Problem, limits: list[dict[str, float]], time_limit: float | None, fixing: bool = True):
    """Exact solves for a sweep by reduced-cost fixing.

    Per point: the LP relaxation gives a lower bound LB and reduced costs d; the LP solution,
    rounded and repaired by :func:`~autocomp.allocators._greedy.greedy` (or the previous point's
    optimum, still feasible as the sweep's limits grow), gives an upper bound UB. Any policy taking a
    choice j costs at least LB + d_j, so choices with LB + d_j > UB cannot be in an optimum and
    are dropped; the MIP that remains is usually a few dozen variables and solves at once.

    With pairwise terms the relaxation's bound no longer holds for the bilinear objective, so
    each point solves the whole linearised MIP, warm-started from the best feasible incumbent.
    """
    if prob.pairs:
        return _solve_pairwise(prob, limits, time_limit)
    lp = HighsModel(prob, limits[0], integer=False)
    offs = np.concatenate([[0], np.cumsum([len(c) for c in prob.choices])])
    out: list[RawSolution | None] = []
    prev = None
    for lim in limits:
        rel = lp.relax(lim)
        if rel is None:
            out.append(None)
            continue
        lb, d, x = rel
        rounded = [int(np.argmax(x[a:b])) for a, b in zip(offs[:-1], offs[1:])]
        cands = [c for c in (greedy(prob, lim, init=rounded), prev) if c is not None and fits(prob, c, lim, rtol=1e-12)]
        ub = min(cands, key=prob.objective) if cands else None
        if ub is None or not fixing:
            keep = [np.arange(len(c)) for c in prob.choices]
        else:
            gap = prob.objective(ub) - lb
            tol = 1e-7 * max(1.0, abs(prob.objective(ub))) + 1e-9 * lp.scale
            keep = [np.union1d(np.flatnonzero(d[a:b] <= gap + tol), [ub[i]])
                    for i, (a, b) in enumerate(zip(offs[:-1], offs[1:]))]
        sub = _subproblem(prob, keep)
        start = [int(np.searchsorted(k, ub[i])) for i, k in enumerate(keep)] if ub is not None else None
        raw = HighsModel(sub, lim, time_limit).solve(lim, start)
        if raw is not None:
            raw = RawSolution(tuple(int(k[p]) for k, p in zip(keep, raw.picks)), raw.proven_optimal)
            prev = list(raw.picks)
        out.append(raw)
    return out


def _solve_pairwise(prob: Problem, limits: list[dict[str, float]], time_limit: float | None):
    model = HighsModel(prob, limits[0], time_limit)
    out: list[RawSolution | None] = []
    prev = None
    for lim in limits:
        cands = [c for c in (greedy(prob, lim), prev) if c is not None and fits(prob, c, lim, rtol=1e-12)]
        raw = model.solve(lim, min(cands, key=prob.objective) if cands else None)
        if raw is not None:
            prev = list(raw.picks)
        out.append(raw)
    return out


def _subproblem(prob: Problem, keep: list[np.ndarray]) -> Problem:
    return Problem(prob.names, prob.items, [[cs[i] for i in k] for cs, k in zip(prob.choices, keep)],
                   [o[k] for o, k in zip(prob.omega, keep)],
                   {m: [c[k] for c, k in zip(cc, keep)] for m, cc in prob.costs.items()}, prob.offsets)
