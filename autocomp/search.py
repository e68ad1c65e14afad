"""The search pipeline: profile -> proxies -> allocate -> evaluate -> store -> front.

Every stage persists what it produced before the next starts, and skips what the study already
holds, so re-running a study resumes it. Ray workers return values; only this controller writes.

Example:
    >>> from autocomp.search import SearchConfig, run_search
    >>> from autocomp.store import Store
    >>> result = run_search(SearchConfig(model="digits"), Store("sqlite:///demo.db"), "demo")  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autocomp.allocators import get_allocator
from autocomp.allocators._base import check_feasible
from autocomp.budget import Budget, CostModel, parse_budget
from autocomp.errors import AutocompError, InfeasibleBudget, StoreError
from autocomp.policy import Choice, Policy
from autocomp.profile import model_param_count, profile_model
from autocomp.progress import Stages
from autocomp.proxies import get_proxy
from autocomp.search_spaces import load_space
from autocomp.store import Store
from autocomp.store.repository import StudyInfo
from autocomp.workload import load_workload

DEFAULT_BASELINES = (8, 6, 4, 3, 2)


@dataclass
class SearchConfig:
    """Everything that defines a search (stored with the study)."""

    model: str = "digits"
    budget: str = "size<=25%"
    space: str = "mixed_precision"
    proxy: str = "loss_delta"     # a registered proxy, or "auto": a small audit picks the best
    data: str = "real"            # proxies' calibration data: real, or distilled (ZeroQ)
    auto_samples: int = 12        # policies the "auto" audit samples
    auto_proxies: tuple[str, ...] = ()  # proxies the "auto" audit compares (default: all)
    allocator: str = "ilp"
    points: int = 12
    baselines: tuple[int, ...] = DEFAULT_BASELINES
    seed: int = 0
    workers: int | None = None
    address: str | None = None
    refine: int = 0               # Optuna refinement evaluations after the sweep (autocomp.refine)
    refine_mode: str = "ptq"      # ptq: Ray actors; qat: Ray Tune trials with OptunaSearch
    refine_sampler: str = "auto"  # auto (NSGA-II for ptq, TPE for qat), nsga2, tpe, random
    latency_table: str | None = None  # JSON from `autocomp profile-latency` (latency budgets)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        return d


@dataclass
class SearchResult:
    study: StudyInfo
    front: list[dict]
    evaluated_now: int
    skipped: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    refined: int = 0  # refinement evaluations made by this call (autocomp.refine)


def _validate(cfg: SearchConfig) -> tuple[Budget, Any]:
    budget = parse_budget(cfg.budget)
    space = load_space(cfg.space)
    if cfg.proxy != "auto":
        get_proxy(cfg.proxy)  # unknown names fail before any work
    for p in cfg.auto_proxies:
        get_proxy(p)
    if cfg.data not in ("real", "distilled"):
        raise AutocompError(f"unknown --data {cfg.data!r}: choose from real, distilled")
    alloc = get_allocator(cfg.allocator)
    if alloc.max_constraints is not None and len(budget.constraints) > alloc.max_constraints:
        raise AutocompError(f"--allocator {cfg.allocator} solves budgets of {alloc.max_constraints} constraint; "
                            f"{budget.describe()!r} has {len(budget.constraints)}: use --allocator ilp")
    if cfg.points < 1:
        raise AutocompError("--points must be at least 1")
    from autocomp.refine import SAMPLERS

    if cfg.refine < 0:
        raise AutocompError("--refine must be 0 or more")
    if cfg.refine_mode not in ("ptq", "qat"):
        raise AutocompError(f"unknown --refine-mode {cfg.refine_mode!r}: use ptq or qat")
    if cfg.refine_sampler not in SAMPLERS:
        raise AutocompError(f"unknown --refine-sampler {cfg.refine_sampler!r}: use one of {', '.join(SAMPLERS)}")
    return budget, space


def run_search(cfg: SearchConfig, store: Store, study_name: str, stages: Stages | None = None) -> SearchResult:
    """Run (or resume) study ``study_name`` with ``cfg``; returns the stored front."""
    from autocomp.report import front as front_of
    from autocomp.workers.proxy_tasks import score_on_ray
    from autocomp.workers.ptq import evaluate_on_ray
    from autocomp.workers.session import ensure_ray

    stages = stages or Stages()
    budget, space = _validate(cfg)

    # The workload loads here first: bad specs fail before the study is touched, and built-in
    # models are trained and cached once before the workers start.
    with stages.stage("load model", 1) as tick:
        workload = load_workload(cfg.model)
        model = workload.model()
        tick()

    with stages.stage("profile", 1) as tick:
        layers = profile_model(model, workload.sample_input())
        if not layers:
            raise AutocompError(f"model {cfg.model!r} has no Conv1d/Conv2d/Linear layer to compress")
        cm = CostModel(layers, total_params=model_param_count(model), latency_table=_latency_table(cfg, budget))
        # An infeasible budget fails here, before anything is stored.
        check_feasible(layers, space.choices(layers), budget, cm)
        tick()

    study, created = store.open_study(study_name, {**cfg.to_dict(), "budget_text": budget.describe()})
    if not created and study.config.get("model") != cfg.model:
        raise AutocompError(f"study {study_name!r} was created for model {study.config.get('model')!r}, "
                            f"not {cfg.model!r}: pick another --study name")
    stored = store.load_layers(study)
    if stored and [l.to_dict() for l in stored] != [l.to_dict() for l in layers]:
        raise AutocompError(f"study {study_name!r} holds a different profile of {cfg.model!r} "
                            "(the model changed since): pick another --study name")
    if not stored:
        store.save_layers(study, layers)
    store.set_status(study, "running")
    fp32_costs = {m: cm.fp32(m) for m in ("size", "bitops", "avg_bits") + (("latency",) if cm.latency_table else ())}
    store.update_config(study, fp32=fp32_costs, front_costs=[c.metric for c in budget.constraints],
                        budget=budget.to_dict(), budget_text=budget.describe(), space_def=space.to_dict())

    with stages.stage("start ray", 1) as tick:
        ensure_ray(cfg.address, num_cpus=cfg.workers, model=cfg.model)
        tick()

    proxy = cfg.proxy if cfg.proxy != "auto" else _auto_proxy(cfg, store, study, stages)
    # Scores from distilled data are stored apart from those of real data.
    skey = proxy if cfg.data == "real" else f"{proxy}@{cfg.data}"

    def score():
        import dataclasses

        s = score_on_ray(cfg.model, proxy, layers, space, workers=cfg.workers, data=cfg.data)
        return dataclasses.replace(s, proxy=skey)

    with stages.stage(f"proxy {skey}", 1) as tick:
        sens = store.load_sensitivity(study, skey)
        if sens is None or any(l.name not in sens.omega for l in layers):
            sens = score()
            store.save_sensitivity(study, sens)
        missing = [(l.name, c.key) for l in layers for c in space.choices_for(l, len(layers))
                   if c.key not in sens.omega.get(l.name, {})]
        if missing:  # scores stored for another space: score again for this one
            sens = score()
            store.save_sensitivity(study, sens)
        tick()

    allocator = get_allocator(cfg.allocator)
    candidates: list[tuple[Policy, str, str, dict]] = []
    with stages.stage("allocate", cfg.points) as tick:
        sweep = allocator.sweep(layers, sens, space, budget, cm, points=cfg.points)
        for a in sweep:
            candidates.append((a.policy, cfg.allocator, f"{cfg.allocator} {_describe_limit(a.budget, cm)}",
                               {"objective": a.objective, "status": a.status, "budget": a.budget.to_dict()}))
        tick(len(sweep))
        # HAWQ's comparison: mixed precision at exactly the size/bitops of each uniform baseline.
        names = [l.name for l in layers]
        primary = budget.constraints[0].metric
        for b in cfg.baselines:
            uni = Policy.uniform(names, Choice(b, 8, 0.0))
            lim = cm.cost(primary, uni)
            if lim > budget.constraints[0].limit(cm) * (1 + 1e-9):
                continue
            try:
                a = allocator.solve(layers, sens, space, budget.with_limit(primary, lim, cm), cm)
            except InfeasibleBudget:
                continue
            candidates.append((a.policy, cfg.allocator, f"{cfg.allocator} @uniform-{b}bit {primary}",
                               {"objective": a.objective, "status": a.status, "budget": a.budget.to_dict()}))
    # Baselines first: a searched policy equal to a uniform one is stored (once) as the baseline.
    baselines = [(Policy.uniform(names, Choice(b, 8, 0.0)), "uniform", f"uniform w{b}a8", {}) for b in cfg.baselines]
    baselines.append((Policy.uniform(names, Choice(32, 32, 0.0)), "fp32", "fp32", {}))
    candidates = baselines + candidates

    metrics = ("size", "bitops", "avg_bits") + (("latency",) if cm.latency_table else ())
    todo, seen = [], set()
    for pol, source, label, info in candidates:
        if pol.id in seen:
            continue
        seen.add(pol.id)
        store.save_policy(study, pol, source, label, cm.costs(pol, metrics), info)
        todo.append(pol)
    done_ids = store.evaluated_ids(study)
    pending = [p for p in todo if p.id not in done_ids]
    costs_of = {p.id: cm.costs(p, metrics) for p in pending}

    failures: list[str] = []
    with stages.stage("evaluate", len(pending)) as tick:
        def on_result(res: dict) -> None:
            store.save_evaluation(study, res["policy_id"], {**res, **costs_of[res["policy_id"]]})
            tick()

        def on_error(pid: str, e: BaseException) -> None:
            failures.append(f"{pid}: {type(e).__name__}")
            tick()

        evaluate_on_ray(cfg.model, pending, on_result, workers=cfg.workers, on_error=on_error)
    if failures:
        store.set_status(study, "incomplete")
        raise AutocompError(f"{len(failures)} evaluation(s) failed ({failures[0]}); stored results are kept: "
                            f"run `autocomp search --study {study_name}` again to retry them")
    refined = _refine_stage(cfg, store, study, layers, space, budget, cm, stages) if cfg.refine else 0
    store.set_status(study, "done")
    return SearchResult(store.get_study(study_name), front_of(store, study), len(pending),
                        len(todo) - len(pending), dict(stages.times), refined)


def _refine_stage(cfg: SearchConfig, store: Store, study: StudyInfo, layers, space, budget: Budget,
                  cm: CostModel, stages: Stages) -> int:
    """Optuna refinement after the sweep (PTQ on the actors, or QAT as Ray Tune trials)."""
    from autocomp.refine import refine

    if cfg.refine_mode == "qat":
        from autocomp.workers.qat import refine_qat

        with stages.stage("refine qat", cfg.refine) as tick:
            res = refine_qat(store, study, spec=cfg.model, layers=layers, space=space, budget=budget, cm=cm,
                             n=cfg.refine, seed=cfg.seed, sampler=cfg.refine_sampler, on_progress=tick)
    else:
        with stages.stage("refine", cfg.refine) as tick:
            res = refine(store, study, spec=cfg.model, layers=layers, space=space, budget=budget, cm=cm,
                         n=cfg.refine, workers=cfg.workers, seed=cfg.seed, sampler=cfg.refine_sampler,
                         on_progress=tick)
    if res.failures:
        store.set_status(study, "incomplete")
        raise AutocompError(f"{len(res.failures)} refinement evaluation(s) failed ({res.failures[0]}); stored "
                            f"results are kept: run `autocomp search --study {study.name} --refine {cfg.refine}` "
                            "again to retry them")
    return res.evaluated


def _latency_table(cfg: SearchConfig, budget: Budget) -> dict | None:
    """The measured per-layer latency table, required when the budget constrains latency."""
    if cfg.latency_table:
        from autocomp.kernels.latency import load_latency_table

        return load_latency_table(cfg.latency_table)
    if "latency" in budget.metrics:
        raise AutocompError("a latency budget needs measured latencies: run `autocomp profile-latency "
                            f"--model {cfg.model} -o table.json` and pass --latency-table table.json")
    return None


def _auto_proxy(cfg: SearchConfig, store: Store, study: StudyInfo, stages: Stages) -> str:
    """``--proxy auto``: audit the proxies on a few sampled policies (study ``<name>-audit``), pick
    the best rank correlation, record the choice in the study config and log it."""
    import logging

    from autocomp.audit import AuditConfig, best_proxy, run_audit

    chosen = study.config.get("proxy_chosen")
    if chosen:  # resumed study: keep the proxy its stored scores came from
        return chosen
    acfg = AuditConfig(model=cfg.model, samples=cfg.auto_samples, proxies=tuple(cfg.auto_proxies), space=cfg.space,
                       seed=cfg.seed, workers=cfg.workers, address=cfg.address, data=cfg.data)
    rows = run_audit(acfg, store, f"{study.name}-audit", stages)
    chosen = best_proxy(rows)
    best = next(r for r in rows if r["proxy"] == chosen)
    msg = f"--proxy auto: using {chosen!r} (Spearman {best['spearman']:+.3f} over {best['samples']} policies)"
    logging.getLogger("autocomp").info(msg)
    stages.log(msg)
    store.update_config(study, proxy_chosen=chosen, proxy_audit=rows)
    return chosen


def _describe_limit(budget: Budget | None, cm: CostModel) -> str:
    if budget is None:
        return ""
    c = budget.constraints[0]
    return f"{c.metric}<={cm.format(c.metric, c.limit(cm))}"
