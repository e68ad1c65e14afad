"""Exact allocation by integer linear programming (PuLP; CBC bundled, HiGHS when installed).

One binary per (layer, choice), one choice per layer, linear budget constraints, tied layers
forced equal; minimise the summed omega. Solver status *and* solution status are both checked:
a time-limited solve is reported as not proven optimal (PuLP #649/#711).
"""
from __future__ import annotations

from typing import Sequence

import pulp

from autocomp.allocators._base import Allocation, Allocator
from autocomp.budget import Budget, CostModel
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo


class ILPAllocator(Allocator):
    """Options: ``time_limit`` (seconds, default none), ``solver`` ("cbc" or "highs")."""

    name = "ilp"

    def _solver(self):
        tl = self.options.get("time_limit")
        if self.options.get("solver", "cbc") == "highs":
            return pulp.HiGHS(msg=False, timeLimit=tl)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=tl)

    def _solve(self, layers: Sequence[LayerInfo], omega, choices: dict[str, list[Choice]], ties,
               budget: Budget, cm: CostModel) -> Allocation:
        prob = pulp.LpProblem("autocomp", pulp.LpMinimize)
        x = {}
        for li, l in enumerate(layers):
            for ci, c in enumerate(choices[l.name]):
                x[l.name, c] = pulp.LpVariable(f"x_{li}_{ci}", cat="Binary")
            prob += pulp.lpSum(x[l.name, c] for c in choices[l.name]) == 1
        # Omegas are rescaled so CBC's tolerances see numbers of order one.
        scale = max((abs(omega[l.name][c.key]) for l in layers for c in choices[l.name]), default=1.0) or 1.0
        prob += pulp.lpSum(omega[l.name][c.key] / scale * x[l.name, c] for l in layers for c in choices[l.name])
        for con in budget.constraints:
            lim = con.limit(cm) - cm.offset(con.metric)
            norm = max(abs(lim), 1e-30)
            prob += pulp.lpSum(cm.layer_cost(con.metric, l, c) / norm * x[l.name, c]
                               for l in layers for c in choices[l.name]) <= lim / norm + 1e-9
        for g in ties:
            for n in g[1:]:
                for c in choices[g[0]]:
                    prob += x[g[0], c] == x[n, c]
        prob.solve(self._solver())
        status = pulp.LpStatus[prob.status]
        sol = prob.sol_status
        if status == "Infeasible" or sol == pulp.LpSolutionInfeasible:
            raise InfeasibleBudget(f"infeasible budget: no policy meets {budget.describe()} (the constraints conflict)")
        if sol not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
            raise AutocompError(f"ILP solver returned no solution (status {status}, solution status {sol})")
        proven = status == "Optimal" and sol == pulp.LpSolutionOptimal
        pol = []
        for l in layers:
            picked = max(choices[l.name], key=lambda c: x[l.name, c].value() or 0.0)
            pol.append((l.name, picked))
        policy = Policy.from_choices(pol)
        obj = sum(omega[n][c.key] for n, c in pol)
        return Allocation(policy, obj, "optimal" if proven else "feasible (not proven optimal)", proven)
