"""Quantization-aware NAS: Ray Tune trials of candidate networks, chosen by Optuna, stopped by ASHA.

Each trial samples an architecture of the workload's family (per-block operation, width, kernel,
depth; :mod:`autocomp.nas_models`) jointly with per-block weight bits, from the workload's NAS
space (``search_spaces/nas_digits.yaml``, ``nas_vit.yaml``), trains it under quantization noise
for a step budget and PTQ-scores it (:func:`autocomp.workers.nas.nas_trainable`). Optuna's TPE
sampler, multi-objective over the quality and the study's costs, lives in the study database as
``<study>:nas``; ASHA stops trials whose fake-quantized accuracy trails at a rung; a trial that
raises is retried ``max_failures`` times, then reported failed with its reason.

Each finished trial is stored as it lands (a Tune callback in the driver): a policy of source
``nas`` with its architecture and costs priced on the candidate itself, and, when it ran to the
end, an evaluation of kind ``nas`` carrying those costs, so the front compares it with the
study's fixed-architecture policies. A trial ASHA stopped is stored as a policy without an
evaluation (``info["stopped"]``); both count towards ``n``.

Example:
    >>> from autocomp.refine_nas import refine_nas
    >>> res = refine_nas(store, study, load_context(store, study), n=8, steps=200)   # doctest: +SKIP
    >>> res.done                                                                    # doctest: +SKIP
    8
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from autocomp.refine_qat import StoreCallback

from autocomp.errors import AutocompError
from autocomp.evaluators import get_evaluator
from autocomp.metrics import Metrics, get_quality_metric
from autocomp.nas_models import NAS_COSTS, check_nas
from autocomp.policy import Policy
from autocomp.refine import RefineResult, make_sampler, optuna_storage, optuna_study_name
from autocomp.search_spaces import SearchSpace, load_space
from autocomp.stages.context import StudyContext
from autocomp.store import Store
from autocomp.store.repository import StudyInfo
from autocomp.store.sealed import SealedURL

SOURCE = "nas"
KIND = "nas"


def nas_space(ctx: StudyContext, space: str | None = None) -> SearchSpace:
    """The NAS space of the study's workload (or ``space``, a name or YAML path), checked.

    Raises:
        AutocompError: the workload has no architecture builder, the space has no ``nas:``
            section, or it is for another family (one line each).
    """
    family, default = check_nas(ctx.spec)
    sp = load_space(space or default)
    if sp.nas is None:
        raise AutocompError(f"search space {sp.name!r} has no 'nas:' section: it cannot drive --trials nas")
    if sp.nas["family"] != family:
        raise AutocompError(f"search space {sp.name!r} is for architecture family {sp.nas['family']!r}; model "
                            f"{ctx.spec!r} is {family!r}")
    return sp


def distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of a NAS space: ``depth``, whole-model settings, and per block slot
    ``b<i>.<setting>`` and ``b<i>.bits`` (slots past the sampled depth are ignored)."""
    from optuna.distributions import CategoricalDistribution

    nas = space.nas
    d: dict[str, Any] = {"depth": CategoricalDistribution(nas["depth"])}
    d.update({k: CategoricalDistribution(v) for k, v in nas["params"].items()})
    for i in range(max(nas["depth"])):
        d.update({f"b{i}.{k}": CategoricalDistribution(v) for k, v in nas["block"].items()})
        d[f"b{i}.bits"] = CategoricalDistribution(list(space.w_bits))
    return d


def _reason(trial: Any) -> str:
    """The last line of a failed trial's traceback (its exception), else its error file."""
    try:
        lines = [l for l in Path(trial.error_file).read_text().splitlines() if l.strip()]
        return lines[-1].strip() if lines else "error"
    except (OSError, TypeError):
        return str(getattr(trial, "error_file", None) or "error")


class _StoreTrials(StoreCallback):
    """Tune callback (runs in the driver): store each NAS trial as it completes or is stopped.

    Tune pickles its callbacks with the experiment state: the database is opened lazily, and
    the URL is sealed (:class:`autocomp.store.sealed.SealedURL`).
    """

    def __init__(self, url: str, study: StudyInfo, name: str, steps: int, out: RefineResult,
                 on_progress: Callable[[int], None] | None):
        super().__init__()
        self.url, self.study, self.name, self.steps = SealedURL(url), study, name, steps
        self.out, self.on_progress, self._store = out, on_progress, None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r = trial.last_result or {}
        if "policy" not in r:
            return   # never reported (removed before it started)
        pol = Policy.from_dict(r["policy"])
        costs = dict(r["costs"])
        done = "evaluation" in r
        meta = {"optuna_study": self.name, "steps": self.steps, "trial": trial.trial_id,
                "iterations": int(r.get("training_iteration", 0)), "arch": pol.arch.key}
        label = f"NAS {pol.arch.family} x{pol.arch.depth}, {self.steps} steps"
        if not done:
            meta["stopped"] = f"ASHA stopped it at step {r.get('step')}"
            label += f" (stopped at step {r.get('step')})"
        new = self.store.save_policy(self.study, pol, SOURCE, label, costs, meta)
        if done:
            ev = Metrics.from_dict(r["evaluation"]).with_costs(costs)
            if self.store.save_evaluation(self.study, ev, kind=KIND):
                self.out.evaluated += 1
            else:
                self.out.reused += 1     # another trial sampled this candidate and evaluated it first
        elif new:
            self.out.rejected += 1       # stopped early: stored, not evaluated
        else:
            self.out.reused += 1
        if self.on_progress:
            self.on_progress(1)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.out.failed += 1
        self.out.failures.append(f"NAS trial {trial.trial_id}: {_reason(trial)}")
        if self.on_progress:
            self.on_progress(1)


def refine_nas(store: Store, study: StudyInfo, ctx: StudyContext, n: int, seed: int = 0, steps: int = 200,
               on_progress: Callable[[int], None] | None = None, max_concurrent: int | None = None, *,
               space: str | None = None, max_failures: int = 1, reports: int = 4) -> RefineResult:
    """Run NAS trials until the study holds ``n`` of them (re-running with the same ``n`` runs nothing).

    Args:
        ctx: the study's context (:func:`autocomp.stages.context.load_context`): its workload,
            budget (the costs Optuna minimises) and size accounting.
        n: NAS trials the study should hold in total (ended trials of its ``<study>:nas`` Optuna
            study, stopped ones included; failed ones are run again).
        steps: optimizer steps per candidate.
        space: the NAS space (name or YAML path); default: the workload's (``nas_digits``, ``nas_vit``).
        max_failures: retries of a trial that raises before it is reported failed.
        reports: intermediate accuracy reports per trial (ASHA's rungs are on these).

    Returns:
        An :class:`autocomp.refine.RefineResult`: ``evaluated`` trials ran to the end, ``rejected``
        were stopped early by ASHA, ``failed`` raised (``failures`` gives each reason).
    """
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from autocomp.workers.nas import nas_trainable
    from autocomp.workers.session import cluster_cpus

    sp = nas_space(ctx, space)
    if isinstance(reports, bool) or not isinstance(reports, int) or reports < 1:
        raise AutocompError(f"NAS reports per trial must be a positive integer, got {reports!r}")
    every = max(1, steps // reports)
    # scored with the study's quantizer, as its own policies are; bad options fail here, once
    options = get_evaluator(KIND, steps=steps, seed=seed, report_every=every,
                            quantizer=study.config.get("quantizer") or "rtn").options_dict()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    qm = get_quality_metric(ctx.quality)
    name = optuna_study_name(study.name, KIND)
    result = RefineResult(name)
    held = _finished(store, name)
    result.done = held
    want = max(0, n - held)
    if want == 0:
        return result
    costs = [m for m in ctx.budget.metrics if m in NAS_COSTS] or ["size"]
    mode = "max" if qm.higher_is_better else "min"
    searcher = OptunaSearch(space=distributions(sp), metric=[qm.name, *costs], mode=[mode] + ["min"] * len(costs),
                            # a resumed run must not replay the first run's random start-up samples
                            sampler=make_sampler("tpe", seed * 1_000_003 + held, 8, mode=KIND), study_name=name,
                            storage=optuna_storage(store.url))
    iterations = steps // every + 1   # the intermediate reports, then the PTQ score
    # The first rung after half the reports: a candidate a quarter into its steps is too noisy to judge.
    asha = ASHAScheduler(time_attr="training_iteration", metric=qm.name, mode=mode, max_t=iterations,
                         grace_period=max(1, reports // 2), reduction_factor=2)
    trainable = tune.with_parameters(nas_trainable, spec=ctx.spec, space_def=sp.to_dict(), options=options,
                                     metrics=costs, full_size=ctx.cm.layout is not None)
    limit = max(1, max_concurrent or cluster_cpus())
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit), scheduler=asha,
                                    num_samples=want, reuse_actors=True),   # workers keep torch and the data loaded
        run_config=tune.RunConfig(name=f"autocomp-{study.name}-nas-{held}", verbose=0,
                                  storage_path=str(_tune_dir()),
                                  failure_config=tune.FailureConfig(max_failures=max_failures),
                                  callbacks=[_StoreTrials(store.url, study, name, steps, result, on_progress)]),
    )
    tuner.fit()
    result.done = _finished(store, name)
    return result


def _finished(store: Store, name: str) -> int:
    """NAS trials that ended (ran to the end or stopped by ASHA; not failed ones) in Optuna study
    ``name``. Trials, not stored policies: two trials may sample the same candidate (one policy)."""
    import optuna
    from optuna.trial import TrialState

    try:
        ostudy = optuna.load_study(study_name=name, storage=optuna_storage(store.url))
    except KeyError:
        return 0
    return len(ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _tune_dir() -> Path:
    p = Path(os.environ.get("AUTOCOMP_TUNE_DIR", Path(tempfile.gettempdir()) / "autocomp-tune"))
    p.mkdir(parents=True, exist_ok=True)
    return p
