"""autocomp's front (allocator sweep seeding Optuna refinement) against Optuna alone, by hypervolume.

Same workload, budget, search space, sampler (NSGA-II), seed and number of PTQ evaluations:

- autocomp: ``run_search`` with ``--points P --refine R`` (proxy scores -> ILP sweep -> uniform
  baselines -> NSGA-II refinement seeded with all of them); E = every PTQ evaluation it made.
- Optuna alone (the baseline, measured in the same run): :func:`autocomp.refine.refine` on an
  empty study with ``n = E`` (NSGA-II from random starts, the same rejection of over-budget
  candidates, the same evaluator), and the same with Optuna's RandomSampler.

Hypervolume in (accuracy, size / fp32 size) against the reference (accuracy 0, size = the
budget), over every evaluated policy within the budget; larger is better.

    python benchmarks/refine_vs_optuna.py [--points 8] [--refine 24] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits")
    ap.add_argument("--budget", default="size<=25%")
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--refine", type=int, default=24)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()

    import ray

    from autocomp.budget import CostModel, parse_budget
    from autocomp.compare import hypervolume
    from autocomp.policy import Policy
    from autocomp.profile import model_param_count
    from autocomp.refine import refine
    from autocomp.report import study_points
    from autocomp.search import SearchConfig, run_search
    from autocomp.search_spaces import load_space
    from autocomp.store import Store
    from autocomp.workload import load_workload

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    budget = parse_budget(args.budget)
    wl = load_workload(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        store = Store(f"sqlite:///{Path(d) / 'bench.db'}")
        for seed in args.seeds:
            cfg = SearchConfig(model=args.model, budget=args.budget, points=args.points, refine=args.refine,
                               workers=2, seed=seed)
            t0 = time.perf_counter()
            run_search(cfg, store, f"autocomp-{seed}")
            t_auto = time.perf_counter() - t0
            st = store.get_study(f"autocomp-{seed}")
            layers = store.load_layers(st)
            cm = CostModel(layers, total_params=model_param_count(wl.model()))
            fp32 = st.config["fp32"]
            ref = [0.0, budget.constraints[0].limit(cm) / fp32["size"]]

            def hv(name: str, skip_source: str | None = None) -> tuple[float, int]:
                s = store.get_study(name)
                pts = [p for p in study_points(store, s) if p["source"] != skip_source]
                pols = {p.policy_id: Policy.from_dict(p.policy) for p in store.list_policies(s)}
                ok = [p for p in pts if not cm.violations(pols[p["policy_id"]], budget)]
                return hypervolume(ok, ["size"], fp32, ref), len(pts)

            hv_auto, evals = hv(f"autocomp-{seed}")
            hv_sweep, n_sweep = hv(f"autocomp-{seed}", skip_source="optuna")
            res = {"seed": seed, "evaluations": evals, "autocomp": hv_auto, "t_autocomp": t_auto, "sweep": hv_sweep}
            for sampler in ("nsga2", "random"):
                name = f"optuna-{sampler}-{seed}"
                sb, _ = store.open_study(name, {"model": args.model, "budget_text": budget.describe()})
                store.save_layers(sb, layers)
                store.update_config(sb, fp32=fp32, front_costs=budget.metrics)
                t0 = time.perf_counter()
                r = refine(store, sb, spec=args.model, layers=layers, space=load_space(cfg.space), budget=budget,
                           cm=cm, n=evals, workers=2, seed=seed, sampler=sampler)
                res[f"t_{sampler}"] = time.perf_counter() - t0
                res[sampler], n = hv(name)
                assert n == evals and r.evaluated == evals, (n, r)
            rows.append(res)
            print(f"seed {seed}: {evals} evaluations each | hypervolume autocomp {hv_auto:.4f} | "
                  f"(sweep alone, {n_sweep} evaluations: {hv_sweep:.4f}) | Optuna NSGA-II alone {res['nsga2']:.4f} | Optuna random {res['random']:.4f} | "
                  f"ratio autocomp / NSGA-II alone {hv_auto / res['nsga2']:.3f} | wall {t_auto:.0f} s / "
                  f"{res['t_nsga2']:.0f} s / {res['t_random']:.0f} s", flush=True)
    ray.shutdown()
    if len(rows) > 1:
        mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
        print(f"mean over {len(rows)} seeds: autocomp {mean('autocomp'):.4f} (sweep alone {mean('sweep'):.4f}), NSGA-II alone {mean('nsga2'):.4f}, "
              f"random {mean('random'):.4f}, ratio {mean('autocomp') / mean('nsga2'):.3f}")


if __name__ == "__main__":
    main()
