"""The search: a short composition of the stages in :mod:`autocomp.stages`.

prepare (validate every input, load and profile the model, resolve the budget: nothing written)
-> open the study -> score -> allocate -> evaluate -> refine, under one status context
(:func:`autocomp.stages.status.tracked`). Every stage persists what it produced and skips what
the study already holds, so re-running a study resumes it. Ray workers return values; only this
controller writes.

Example:
    >>> from autocomp.search import SearchConfig, run_search
    >>> from autocomp.store import Store
    >>> result = run_search(SearchConfig(model="digits"), Store("sqlite:///demo.db"), "demo")  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autocomp.allocators import get_allocator
from autocomp.budget import Budget, parse_budget
from autocomp.costs import get_cost_metric
from autocomp.devices import check_device, check_eval_dtype, resolve_device
from autocomp.errors import AutocompError
from autocomp.evaluators.ptq import build_quantizer
from autocomp.progress import Stages
from autocomp.proxies import get_proxy
from autocomp.search_spaces import load_space
from autocomp.stages import (DEFAULT_BASELINES, EvaluateResult, StudyContext, check_data, check_profile, check_refine,
                             evaluate, plan_candidates, profile, record_profile, refine, save_candidates, score,
                             score_key, stored_accounting, tracked)
from autocomp.stages.interactions import check_interactions, measure_interactions, pending_probes
from autocomp.stages.repair import check_repair, repair
from autocomp.stages.target import seek_target
from autocomp.stages.trials import TrialsSpec, check_trials, pending_count, run_trials
from autocomp.store import Store
from autocomp.store.repository import StudyInfo, check_study_name
from autocomp.target import parse_target
from autocomp.workload import load_workload, validate_workload


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
    auto_band_mates: int = 2      # of every 1 + this many of those policies, this many are of about the same size
    allocator: str = "ilp"
    points: int = 12
    baselines: tuple[int, ...] = DEFAULT_BASELINES
    seed: int = 0
    workers: int | None = None
    address: str | None = None
    refine: int = 0               # Optuna refinement evaluations after the sweep (autocomp.refine)
    refine_mode: str = "ptq"      # an evaluator: ptq on the actor pool; qat (trains) as Ray Tune trials
    refine_sampler: str = "auto"  # auto (NSGA-II for ptq, TPE for qat), nsga2, tpe, random
    latency_table: str | None = None  # JSON from `autocomp profile-latency` (latency budgets)
    target: str | None = None     # a quality target (autocomp.target): bisect for the cheapest policy meeting it
    minimise: str = "size"        # the cost metric the target search minimises (the budget stays an upper bound)
    target_tol: float = 0.02      # stop when the bracket is this narrow (share of fp32's cost)
    max_evals: int = 12           # or when the bisection has probed this many policies
    interactions: int = 0         # measure pairwise terms of the K most sensitive layers (autocomp.interactions)
    repair: int = 0               # evaluations for re-measuring the best policy's neighbours (stages.repair)
    device: str = "auto"          # proxy tasks and evaluator actors: auto (cuda when the cluster has GPUs), cpu, cuda
    eval_dtype: str = "float32"   # autocast dtype of the evaluations: float32, float16, bfloat16
    quantizer: str = "rtn"        # how weights become codes (autocomp.quantizers): rtn, gptq, gptq+bias_correction, ...
    trials: str | None = None     # training trials after the sweep (autocomp.stages.trials): qat, nas
    top: int = 3                  # --trials qat: the best K policies of the PTQ front
    qat: str = ""                 # --trials qat: the qat evaluator's options, 'key=value,...'
    trials_per_policy: int = 1    # --trials qat: M > 1: Optuna samples each trial's estimator, its parameters, lr
    trial_steps: int | None = None  # the step budget of each QAT/NAS trial
    nas_samples: int = 0          # --trials nas: the NAS trials the study should hold
    trial_retries: int = 1        # reruns of a trial that raised (Tune max_failures)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        d["auto_proxies"] = list(self.auto_proxies)
        if self.target is None:  # a budget sweep stores the configuration it always stored
            for k in _TARGET_KEYS:
                d.pop(k)
        for k in ("interactions", "repair"):  # likewise without them
            if not d[k]:
                d.pop(k)
        for k, default in (("device", "auto"), ("eval_dtype", "float32"), ("quantizer", "rtn")):
            if d[k] == default:
                d.pop(k)
        if self.proxy != "auto":
            d.pop("auto_band_mates")
        if self.trials is None:   # likewise without training trials
            for k in _TRIAL_KEYS:
                d.pop(k)
        return d

    def trials_spec(self) -> TrialsSpec:
        """The ``--trials`` options as the stage takes them."""
        return TrialsSpec(self.trials, self.top, self.qat, self.trials_per_policy, self.trial_steps,
                          self.nas_samples, self.trial_retries, self.seed)

    def resume_command(self, study: str) -> str:
        """The command that resumes study ``study`` with this configuration's refinement or target."""
        cmd = f"autocomp search --study {study}"
        if self.refine:
            cmd += f" --refine {self.refine}" + (f" --refine-mode {self.refine_mode}" if self.refine_mode != "ptq" else "")
        if self.target is not None:
            import shlex

            cmd += (f" --budget {shlex.quote(self.budget)} --target {shlex.quote(self.target)} --minimise "
                    f"{self.minimise} --target-tol {self.target_tol:g} --max-evals {self.max_evals}")
        cmd += f" --interactions {self.interactions}" if self.interactions else ""
        cmd += f" --repair {self.repair}" if self.repair else ""
        cmd += f" --eval-dtype {self.eval_dtype}" if self.eval_dtype != "float32" else ""
        if self.quantizer != "rtn":
            import shlex

            cmd += f" --quantizer {shlex.quote(self.quantizer)}"
        return cmd + self._trials_args()

    def _trials_args(self) -> str:
        import shlex

        if self.trials is None:
            return ""
        cmd = f" --trials {self.trials}"
        if self.trials == "nas":
            cmd += f" --nas-samples {self.nas_samples}"
        else:
            cmd += f" --top {self.top}" + (f" --qat {shlex.quote(self.qat)}" if self.qat else "")
            cmd += f" --trials-per-policy {self.trials_per_policy}" if self.trials_per_policy != 1 else ""
        cmd += f" --trial-steps {self.trial_steps}" if self.trial_steps is not None else ""
        cmd += f" --trial-retries {self.trial_retries}" if self.trial_retries != 1 else ""
        cmd += f" --seed {self.seed}" if self.seed else ""
        return cmd


_TARGET_KEYS = ("target", "minimise", "target_tol", "max_evals")
_TRIAL_KEYS = ("trials", "top", "qat", "trials_per_policy", "trial_steps", "nas_samples", "trial_retries")
_TARGET_DEFAULTS = {"minimise": "size", "target_tol": 0.02, "max_evals": 12}


@dataclass
class SearchResult:
    study: StudyInfo
    front: list[dict]
    evaluated_now: int
    skipped: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    refined: int = 0  # refinement evaluations made by this call (autocomp.refine)
    target: dict | None = None  # with a target: the answer and its bracket (autocomp.stages.target)
    trialled: int = 0  # training trials (--trials) stored by this call


def check_config(cfg: SearchConfig) -> None:
    """Every option that can be checked without the model (the quantizer spec is normalised in
    place); raises a one-line AutocompError."""
    budget = parse_budget(cfg.budget)
    if cfg.proxy != "auto":
        get_proxy(cfg.proxy)
    for p in cfg.auto_proxies:
        get_proxy(p)
    check_data(cfg.data)
    get_allocator(cfg.allocator).check_constraints(budget.metrics, budget.describe())
    if cfg.points < 1:
        raise AutocompError("--points must be at least 1")
    if cfg.workers is not None and cfg.workers < 1:
        raise AutocompError("--workers must be at least 1")
    check_refine(cfg.refine, cfg.refine_mode, cfg.refine_sampler)
    if "latency" in budget.metrics and not cfg.latency_table:
        raise AutocompError("a latency budget needs measured latencies: run `autocomp profile-latency "
                            f"--model {cfg.model} -o table.json` and pass --latency-table table.json")
    _check_target(cfg, budget)
    check_device(cfg.device)
    check_eval_dtype(cfg.eval_dtype)
    # one spelling per quantizer (``rtn()`` is ``rtn``): the spelling names the study's evaluation kind
    cfg.quantizer = build_quantizer(cfg.quantizer).spec
    for q in load_space(cfg.space).quantizers():   # a space's per-layer quantizers (``quantizer: [rtn, gptq]``)
        build_quantizer(q)
    check_interactions(cfg.interactions)
    check_repair(cfg.repair)
    if cfg.interactions:
        get_allocator(cfg.allocator).check_pairwise()
    if cfg.repair and cfg.target is not None:
        raise AutocompError("--repair does not combine with --target: the target search picks its own policies")
    check_trials(cfg.trials_spec(), cfg.model)   # --trials nas: also that the workload has an architecture builder


def _check_target(cfg: SearchConfig, budget: Budget) -> None:
    """The target options; the target against the workload's metric is checked in :func:`prepare`."""
    if cfg.target is None:
        bad = [k for k, v in _TARGET_DEFAULTS.items() if getattr(cfg, k) != v]
        if bad:
            raise AutocompError(f"--{bad[0].replace('_', '-')} applies only with --target")
        return
    parse_target(cfg.target)
    get_cost_metric(cfg.minimise)
    metrics = list(dict.fromkeys([cfg.minimise, *budget.metrics]))
    get_allocator(cfg.allocator).check_constraints(metrics, ", ".join(metrics))
    if not 0 < cfg.target_tol < 1:
        raise AutocompError("--target-tol is a share of fp32's cost, between 0 and 1 (e.g. 0.02)")
    if cfg.max_evals < 1:
        raise AutocompError("--max-evals must be at least 1")
    if cfg.refine:
        raise AutocompError("--refine does not combine with --target: the target search picks its own policies")
    if cfg.minimise == "latency" and not cfg.latency_table:
        raise AutocompError("--minimise latency needs measured latencies: pass --latency-table table.json "
                            "(from `autocomp profile-latency`)")


def prepare(cfg: SearchConfig, stages: Stages | None = None) -> StudyContext:
    """Validate ``cfg``, load and profile the model, resolve the budget; writes nothing.

    The workload loads here first: bad specs fail before any study is touched, and built-in
    models are trained and cached once before the workers start.
    """
    stages = stages or Stages()
    check_config(cfg)
    budget, space = parse_budget(cfg.budget), load_space(cfg.space)
    table = None
    if cfg.latency_table:
        from autocomp.kernels.latency import load_latency_table

        table = load_latency_table(cfg.latency_table)
    with stages.stage("load model", 1) as tick:
        workload = load_workload(cfg.model)
        validate_workload(workload)
        tick()
    with stages.stage("profile", 1) as tick:
        ctx = profile(workload, budget, space, table)   # an infeasible budget fails here
        space.check_layers(ctx.layers)                  # overrides and ties name real layers
        tick()
    if cfg.target is not None:
        parse_target(cfg.target).check(ctx.quality)    # the workload's metric: name, direction, range
    return ctx


def run_search(cfg: SearchConfig, store: Store, study_name: str, stages: Stages | None = None) -> SearchResult:
    """Run (or resume) study ``study_name`` with ``cfg``; returns the stored front.

    The study's status is ``running`` meanwhile and ``done``, ``incomplete``, ``interrupted`` or
    ``failed`` afterwards, also when this raises.
    """
    from autocomp.report import front
    from autocomp.workers.placement import cluster_gpus
    from autocomp.workers.session import ensure_ray

    stages = stages or Stages()
    check_study_name(study_name)
    if cfg.proxy == "auto":
        check_study_name(f"{study_name}-audit")
    ctx = prepare(cfg, stages)
    existing = store.get_study(study_name, missing_ok=True)
    if existing is not None:
        check_profile(store, existing, ctx)   # refused before anything is written
        check_quantizer(existing, cfg.quantizer)
        ctx = stored_accounting(store, existing, ctx)
    # The cluster too is checked before the study is touched: a dead address writes nothing.
    with stages.stage("start ray", 1) as tick:
        ensure_ray(cfg.address, num_cpus=cfg.workers, model=cfg.model)
        device = resolve_device(cfg.device, cluster_gpus())   # cuda without GPUs: refused, nothing written
        tick()
    study, _ = store.open_study(study_name, {**cfg.to_dict(), "budget_text": ctx.budget.describe()})
    # every PTQ evaluation of the study (sweep, probes, target, repair, refine) uses one quantizer
    ptq = {"device": device, "eval_dtype": cfg.eval_dtype, "quantizer": cfg.quantizer}
    with tracked(store, study, resume=cfg.resume_command(study_name)):
        record_profile(store, study, ctx, latency_table=cfg.latency_table)
        proxy = cfg.proxy if cfg.proxy != "auto" else _auto_proxy(cfg, store, study, stages)
        with stages.stage(f"proxy {score_key(proxy, cfg.data)}", 1) as tick:
            sens = score(store, study, ctx, proxy, cfg.data, proxy_options(proxy, cfg.quantizer),
                         workers=cfg.workers, device=device)
            tick()
        pairwise = None
        if cfg.interactions:
            with stages.stage(f"interactions k={cfg.interactions}", pending_probes(
                    store, study, ctx, sens, cfg.interactions)) as tick:
                pairwise = measure_interactions(store, study, ctx, sens, cfg.interactions, workers=cfg.workers,
                                                on_progress=tick, options=ptq).pairwise(sens)
        sought = None
        if cfg.target is not None:
            with stages.stage(f"target {cfg.target}", cfg.max_evals) as tick:
                sought = seek_target(store, study, ctx, sens, parse_target(cfg.target), cfg.minimise, cfg.allocator,
                                     cfg.target_tol, cfg.max_evals, cfg.workers, on_progress=tick,
                                     pairwise=pairwise, options=ptq)
            done = EvaluateResult(sought.evaluated, sought.skipped)
        else:
            with stages.stage("allocate", cfg.points) as tick:
                policies = save_candidates(store, study, ctx, plan_candidates(
                    ctx, sens, cfg.allocator, cfg.points, cfg.baselines, on_progress=tick, pairwise=pairwise))
            todo = len([p for p in policies if p.id not in store.evaluated_ids(study)])
            with stages.stage("evaluate" if cfg.quantizer == "rtn" else f"evaluate {cfg.quantizer}", todo) as tick:
                done = evaluate(store, study, ctx.spec, ctx.cm, policies, "ptq", workers=cfg.workers, on_progress=tick,
                                options=ptq)
            if cfg.repair:
                with stages.stage("repair", cfg.repair) as tick:
                    done.evaluated += repair(store, study, ctx, sens, cfg.repair, pairwise, workers=cfg.workers,
                                             on_progress=tick, options=ptq).evaluated
        refined = 0
        if cfg.refine:
            with stages.stage("refine" if cfg.refine_mode == "ptq" else f"refine {cfg.refine_mode}", cfg.refine) as tick:
                refined = refine(store, study, ctx, cfg.refine, cfg.refine_mode, cfg.workers, cfg.seed,
                                 cfg.refine_sampler, on_progress=tick, options=ptq).evaluated
        trialled = 0
        if cfg.trials:
            spec = cfg.trials_spec()
            with stages.stage(f"trials {cfg.trials}", pending_count(store, study, spec)) as tick:
                trialled = run_trials(store, study, ctx, spec, cfg.workers, on_progress=tick, device=device,
                                      eval_dtype=cfg.eval_dtype).evaluated
    return SearchResult(store.get_study(study_name), front(store, study), done.evaluated, done.skipped,
                        dict(stages.times), refined, None if sought is None else sought.to_dict(), trialled)


def check_quantizer(study: StudyInfo, quantizer: str) -> None:
    """Refuse to resume ``study`` with another quantizer than its evaluations used (reads only).

    Example:
        >>> check_quantizer(store.get_study("s"), "gptq")   # doctest: +SKIP
        Traceback (most recent call last):
        autocomp.errors.AutocompError: study 's' was evaluated with quantizer 'rtn', not 'gptq': ...
    """
    import shlex

    stored = study.config.get("quantizer", "rtn")
    if stored != quantizer:
        raise AutocompError(f"study {study.name!r} was evaluated with quantizer {stored!r}, not {quantizer!r}: "
                            f"resume it with --quantizer {shlex.quote(stored)}, or pick another --study name")


def proxy_options(proxy: str, quantizer: str) -> dict[str, Any]:
    """The proxy's options for a search under ``quantizer``: it scores with that quantizer when it
    has a ``quantizer`` option (so the allocator sees what will be evaluated), else none."""
    return {"quantizer": quantizer} if quantizer != "rtn" and "quantizer" in get_proxy(proxy).config_dict() else {}


def _auto_proxy(cfg: SearchConfig, store: Store, study: StudyInfo, stages: Stages) -> str:
    """``--proxy auto``: audit the proxies on a few sampled policies (study ``<name>-audit``), pick
    the best rank correlation, record the choice in the study config and log it."""
    import logging

    from autocomp.audit import AuditConfig, best_proxy, run_audit

    chosen = study.config.get("proxy_chosen")
    if chosen:  # resumed study: keep the proxy its stored scores came from
        return chosen
    # The allocator ranks policies of about the budget's cost: spend the audit's evaluations on
    # anchors spread over the range, each with band mates of about its size, so that the
    # within-band figure best_proxy ranks by is measured, not only the spread's.
    mates = max(0, cfg.auto_band_mates)
    acfg = AuditConfig(model=cfg.model, samples=max(2, -(-cfg.auto_samples // (1 + mates))),
                       proxies=tuple(cfg.auto_proxies), space=cfg.space, band_mates=mates,
                       seed=cfg.seed, workers=cfg.workers, address=cfg.address, data=cfg.data,
                       quantizers=(cfg.quantizer,))   # audit what the study will evaluate
    rows = run_audit(acfg, store, f"{study.name}-audit", stages)
    chosen = best_proxy(rows)
    best = next(r for r in rows if r["proxy"] == chosen)
    band = best.get("band_spearman")
    within = "" if band is None else f", within size bands {band:+.3f}"
    msg = (f"--proxy auto: using {chosen!r} (Spearman {best['spearman']:+.3f}{within} over {best['samples']} "
           "policies)")
    logging.getLogger("autocomp").info(msg)
    stages.log(msg)
    store.update_config(study, proxy_chosen=chosen, proxy_audit=rows)
    return chosen
