"""Exact allocation by integer linear programming (PuLP; CBC bundled, HiGHS when installed).

One binary per (item, choice) - tied layers are one item -, one choice per item, one linear
constraint per budget metric; minimise the summed omega. Dominated choices are removed first
(see :mod:`autocomp.allocators._problem`) and a sweep reuses one model, changing only the
bounds between points.

- HiGHS (default when ``highspy`` is installed; :mod:`autocomp.allocators._highs`): in process;
  per point the LP relaxation's reduced costs, against an incumbent from the rounded LP
  solution, discard every choice that cannot be in an optimum, and the small MIP left is solved.
- CBC (bundled with PuLP): the model is built once from coefficient lists and warm-started from
  :func:`~autocomp.allocators._greedy.greedy` or the previous point's solution (feasible, since
  the sweep's limits grow).

Pairwise terms (measured interactions; :mod:`autocomp.allocators._problem`) are linearised
exactly: one auxiliary binary ``y`` per nonzero term of items ``i``, ``j`` at choices ``a``,
``b``, with ``y <= x_ia``, ``y <= x_jb`` and ``y >= x_ia + x_jb - 1``, so ``y = x_ia * x_jb`` in
every integer solution; the objective adds ``term * y``. (HiGHS then solves the MIP whole, without
reduced-cost fixing, which is only valid for the additive relaxation.)

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
from autocomp.allocators._greedy import fits, greedy
from autocomp.allocators._problem import Problem, pair_terms
from autocomp.errors import AutocompError


class ILPAllocator(Allocator):
    """Options: ``solver`` ("auto": HiGHS in process when highspy is installed, else CBC;
    "highs"; "cbc"), ``time_limit`` (seconds per point, default none), ``remove_dominated``
    and ``warm_start`` (both default true)."""

    name = "ilp"
    pairwise = True

    @property
    def solver(self) -> str:
        s = self.options.get("solver", "auto")
        if s == "auto":
            return "highs" if _highs.available() else "cbc"
        if s not in ("highs", "cbc"):
            raise AutocompError(f"unknown ILP solver {s!r}: use auto, highs or cbc")
        if s == "highs" and not _highs.available():
            raise AutocompError("solver 'highs' needs highspy, a dependency of autocomp that is missing: pip install highspy")
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
        cands = [p for p in (greedy(prob, lim), prev) if p is not None and fits(prob, p, lim)]
        return min(cands, key=prob.objective) if cands else None

    def _solve_points(self, prob: Problem, limits: list[dict[str, float]]) -> list[RawSolution | None]:
        out: list[RawSolution | None] = []
        prev: list[int] | None = None
        if self.solver == "highs":
            return _highs.solve_points(prob, limits, self.options.get("time_limit"),
                                       bool(self.options.get("warm_start", True)))
        model, x, cons, ys = _build(prob, limits[0])
        for lim in limits:
            for m, con in cons.items():
                con.changeRHS(_scaled(lim[m], m, cons))
            start = self._start(prob, lim, prev)
            if start is not None:
                for i, xs in enumerate(x):
                    for k, v in enumerate(xs):
                        v.setInitialValue(1.0 if k == start[i] else 0.0)
                for y, (i, j, a, b, _) in zip(ys, pair_terms(prob)):
                    y.setInitialValue(float(start[i] == a and start[j] == b))
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
    scale = max([scale, *(float(np.abs(q).max()) for _, _, q in prob.pairs)])
    objective = [(v, float(c) / scale) for xs, o in zip(x, prob.omega) for v, c in zip(xs, o)]
    ys = []
    for n, (i, j, a, b, q) in enumerate(pair_terms(prob)):
        y = new_var(f"y_{n}")
        ys.append(y)
        objective.append((y, q / scale))
        model += pulp.LpConstraint(pulp.LpAffineExpression([(y, 1.0), (x[i][a], -1.0)]), pulp.LpConstraintLE, f"ya_{n}", 0.0)
        model += pulp.LpConstraint(pulp.LpAffineExpression([(y, 1.0), (x[j][b], -1.0)]), pulp.LpConstraintLE, f"yb_{n}", 0.0)
        model += pulp.LpConstraint(pulp.LpAffineExpression([(y, 1.0), (x[i][a], -1.0), (x[j][b], -1.0)]),
                                   pulp.LpConstraintGE, f"yab_{n}", -1.0)
    model += pulp.LpAffineExpression(objective)
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
    return model, x, cons, ys


def _scaled(limit: float, metric: str, cons) -> float:
    return limit / cons[metric].norm + 1e-9


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
