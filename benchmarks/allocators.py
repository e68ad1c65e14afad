"""Allocator speed: 200 layers x 8 weight bits x 2 activation bits x 5 pruning ratios, three
constraints (size, BitOps, latency), against a plain PuLP model of the same instance built in
the same run.

    python benchmarks/allocators.py [--layers 200] [--points 50] [--seed 0]

Prints, for each measurement, the time and the ratio plain / ours:
1. one budget, three constraints: plain PuLP (build + CBC) vs the ``ilp`` allocator;
2. a 50-point sweep: plain model rebuilt and solved per point vs ``ilp.sweep``;
3. one budget, one constraint: ``dp`` vs ``ilp`` (same objective checked), and their sweeps.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pulp

from autocomp.allocators import get_allocator
from autocomp.allocators.synthetic import instance
from autocomp.budget import Budget

def plain_pulp(layers, sens, space, cm, limits) -> tuple[float, float, float]:
    """The textbook model: every choice a variable, lpSum of products, solved by CBC."""
    t0 = time.perf_counter()
    prob = pulp.LpProblem("plain", pulp.LpMinimize)
    ch = space.choices(layers)
    x = {(l.name, c): pulp.LpVariable(f"x_{i}_{j}", cat="Binary") for i, l in enumerate(layers) for j, c in enumerate(ch[l.name])}
    prob += pulp.lpSum(sens.omega[l.name][c.key] * x[l.name, c] for l in layers for c in ch[l.name])
    for l in layers:
        prob += pulp.lpSum(x[l.name, c] for c in ch[l.name]) == 1
    for con in limits:
        lim = con.bound - cm.offset(con.metric)
        prob += pulp.lpSum(cm.layer_cost(con.metric, l, c) / lim * x[l.name, c] for l in layers for c in ch[l.name]) <= 1
    t1 = time.perf_counter()
    prob.solve(pulp.PULP_CBC_CMD(msg=False))
    t2 = time.perf_counter()
    assert pulp.LpStatus[prob.status] == "Optimal", pulp.LpStatus[prob.status]
    return t1 - t0, t2 - t1, float(pulp.value(prob.objective))


class Timer:
    """Wall and CPU seconds (this process and its children: CBC runs as a subprocess). The CPU
    figure is what an unloaded machine would show; the wall one depends on the load."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, _cpu() - self.c0

    def __str__(self) -> str:
        return f"{self.wall:.2f} s wall / {self.cpu:.2f} s CPU"


def _cpu() -> float:
    a, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + c.ru_utime + c.ru_stime


def ratio(base: Timer, ours: Timer) -> str:
    return f"{base.wall / ours.wall:.1f}x wall, {base.cpu / ours.cpu:.1f}x CPU"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--plain-points", type=int, default=3, help="plain-model sweep points actually run (then scaled)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    layers, sens, space, cm, budget = instance(args.layers, args.seed)
    limits = budget.resolve(cm)
    n = len(space.choices_for(layers[0], len(layers)))
    print(f"instance: {len(layers)} layers x {n} choices, constraints: {budget.describe()}")

    with Timer() as plain:
        build, solve, plain_obj = plain_pulp(layers, sens, space, cm, limits)
    print(f"plain PuLP+CBC, one budget: build {build:.2f} s + solve {solve:.2f} s; {plain}")
    for solver in ("highs", "cbc"):
        with Timer() as t:
            a = get_allocator("ilp", solver=solver).solve(layers, sens, space, limits, cm)
        assert a.proven_optimal and abs(a.objective - plain_obj) <= 1e-7 * max(1.0, abs(plain_obj)), (a.objective, plain_obj)
        print(f"ilp[{solver}], one budget, proven optimal, same objective: {t} -> {ratio(plain, t)}")

    first = budget.constraints[0]
    ilp = get_allocator("ilp", solver="highs")
    with Timer() as sw_t:
        sw = ilp.sweep(layers, sens, space, limits, cm, points=args.points)
    assert all(a.proven_optimal for a in sw)
    print(f"ilp[highs] sweep, {args.points} points ({len(sw)} distinct policies, all proven optimal): {sw_t}")
    lims = [a.limits.primary.bound for a in sw]
    with Timer() as pl:
        for lim in np.linspace(min(lims), limits.primary.bound, args.plain_points):
            plain_pulp(layers, sens, space, cm, limits.with_limit(first.metric, float(lim)))
    k = args.points / args.plain_points
    pl.wall, pl.cpu = pl.wall * k, pl.cpu * k
    print(f"plain sweep, {args.points} points (scaled from {args.plain_points}): {pl} -> {ratio(pl, sw_t)}")

    # Single budget: DP against ILP on the first constraint alone.
    single = Budget((first,)).resolve(cm)
    dp = get_allocator("dp")
    with Timer() as ti:
        ai = ilp.solve(layers, sens, space, single, cm)
    with Timer() as td:
        ad = dp.solve(layers, sens, space, single, cm)
    same = abs(ai.objective - ad.objective) <= 1e-7 * max(1.0, abs(ai.objective))
    print(f"single budget {first.describe()}: ilp[highs] {ti}, dp {td} -> dp {ratio(ti, td)} faster; "
          f"objectives {'equal' if same else 'DIFFER'} ({ai.objective:.6g} vs {ad.objective:.6g}); dp {ad.status}")
    with Timer() as tis:
        ilp.sweep(layers, sens, space, single, cm, points=args.points)
    with Timer() as tds:
        dp.sweep(layers, sens, space, single, cm, points=args.points)
    print(f"single-constraint {args.points}-point sweep: ilp[highs] {tis}, dp {tds} -> dp {ratio(tis, tds)} faster")


if __name__ == "__main__":
    main()
