"""QAT trials: fine-tune the best policies of a study's PTQ front as Ray Tune trials.

``autocomp search --trials qat --top K`` runs the ``qat`` evaluator on the ``K`` best searched
(non-baseline) policies of the study's PTQ front, best quality first. Each finished trial is
stored as it lands, as an evaluation beside the policy's PTQ one (same policy id), of kind
``qat:<hash>`` where the hash names the trial's evaluator options (those that differ from the
defaults): a different ``--qat`` options set is a different trial, and one already stored is
never run again. The options themselves are kept in the evaluation's extras (``qat_options``).

With ``per_policy`` M > 1, an Optuna sampler (TPE, its study in the study database as
``<study>:qat-trials:<hash of the fixed options>``) samples the estimator, its hyper-parameters and
the learning rate of each policy's M trials (options given with ``--qat`` stay fixed); each
policy gets exactly M trials of that options set, counted from the stored evaluations.

A trial that raises is retried ``retries`` times by Tune (``FailureConfig(max_failures=...)``),
then recorded as failed with its reason (study record ``qat-trials/<hash>``) while the others run
on; the caller reports the failures (:class:`autocomp.stages.status.IncompleteRun`), and running
the same command again retries only those.

Example:
    >>> from autocomp.trials import qat_trials
    >>> res = qat_trials(store, study, ctx, top=2, options={"epochs": 1})   # doctest: +SKIP
    >>> res.evaluated, res.done                                              # doctest: +SKIP
    (2, 2)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from autocomp.refine_qat import StoreCallback

from autocomp.metrics import Metrics, get_quality_metric
from autocomp.policy import Policy
from autocomp.refine import RefineResult, make_sampler, optuna_storage, optuna_study_name
from autocomp.salient import evaluation_costs
from autocomp.store import Store
from autocomp.store.repository import StudyInfo
from autocomp.store.sealed import SealedURL
from autocomp.trial_options import KIND, qat_fields, trial_group, trial_kind

RECORD = "qat-trials/"     # study record of a trials run's failures: RECORD + group
# What M > 1 samples: the learning rate, the estimator, and each estimator's hyper-parameters;
# only the fields the ``qat`` evaluator has are sampled (a name it lacks is left out).
LR_RANGE = (1e-4, 1e-2)
ESTIMATORS = ("ste", "reste", "biper")
ESTIMATOR_PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    "reste": {"reste_power": (1.0, 4.0)},
    "biper": {"biper_freq": (0.5, 4.0)},
}


def trial_resources(device: str, width: int, gpus: float | None = None) -> tuple[str, dict[str, float]]:
    """``(device, Tune resources of one trial)`` for ``width`` trials in flight on a cluster with
    ``gpus`` GPUs (default: those the connected Ray cluster reports).

    ``auto`` is CUDA when there are GPUs; on CUDA each trial holds one CPU and an even share of
    the GPUs (at most one each, :func:`autocomp.workers.placement.gpu_share`), else one CPU.

    Raises:
        AutocompError: ``cuda`` and the cluster reports no GPU; an unknown device.

    Example:
        >>> trial_resources("auto", 4, gpus=0)
        ('cpu', {'cpu': 1})
        >>> trial_resources("auto", 4, gpus=1)
        ('cuda', {'cpu': 1, 'gpu': 0.25})
    """
    from autocomp.devices import resolve_device
    from autocomp.workers.placement import cluster_gpus, gpu_share

    gpus = cluster_gpus() if gpus is None else gpus
    resolved = resolve_device(device, gpus)
    if resolved == "cuda":
        return resolved, {"cpu": 1, "gpu": gpu_share(gpus, width)}
    return resolved, {"cpu": 1}


def top_policies(store: Store, study: StudyInfo, k: int) -> list[str]:
    """The ``k`` best searched policies of the PTQ front, best quality first (ties: cheaper, id)."""
    from autocomp.report import front, quality_metric

    pts = [p for p in front(store, study, kind="ptq") if p["on_front"] and not p["baseline"]]
    metric = quality_metric(pts)
    sign = -1.0 if metric.higher_is_better else 1.0
    pts.sort(key=lambda p: (sign * p["quality"], p.get("size") or 0.0, p["policy_id"]))
    return [p["policy_id"] for p in pts[:k]]


def pending_trials(store: Store, study: StudyInfo, pids: Sequence[str], options: Mapping[str, Any],
                   per_policy: int) -> dict[str, int]:
    """Policy -> trials still to run (a policy with all its trials stored is left out)."""
    group = trial_group(options, per_policy)
    if per_policy == 1:
        done = store.evaluated_ids(study, kind=trial_kind(options))
        return {p: 1 for p in pids if p not in done}
    count: dict[str, int] = {}
    for e in store.list_evaluations(study, kind=None):
        if e.kind.startswith(f"{KIND}:") and e.extra.get("trial_group") == group:
            count[e.policy_id] = count.get(e.policy_id, 0) + 1
    return {p: per_policy - count.get(p, 0) for p in pids if count.get(p, 0) < per_policy}


class TrialSpace:
    """Optuna define-by-run space of the M > 1 trials: the policy (always enqueued, so fixed),
    then what ``fixed`` leaves open among the learning rate, the estimator and its parameters."""

    def __init__(self, pids: Sequence[str], fixed: Mapping[str, Any]):
        self.pids, self.fixed, self.fields = list(pids), dict(fixed), set(qat_fields())

    def __call__(self, trial: Any) -> None:
        trial.suggest_categorical("policy", self.pids)
        if "lr" not in self.fixed:
            trial.suggest_float("lr", *LR_RANGE, log=True)
        est = self.fixed.get("estimator")
        if est is None and "estimator" in self.fields:
            est = trial.suggest_categorical("estimator", list(ESTIMATORS))
        for name, (lo, hi) in ESTIMATOR_PARAMS.get(est or "", {}).items():
            if name in self.fields and name not in self.fixed:
                trial.suggest_float(name, lo, hi)


class _StoreTrials(StoreCallback):
    """Tune callback (runs in the driver): store each trial's evaluation as it lands, record the
    trials that failed after their retries. The URL is sealed (no password in Tune's files)."""

    def __init__(self, url: str, study: StudyInfo, cm: Any, options: dict, group: str, sampled: bool,
                 out: RefineResult, on_progress: Callable[[int], None] | None):
        super().__init__()
        self.url, self.study, self.cm, self.options = SealedURL(url), study, cm, options
        self.group, self.sampled, self.out, self.on_progress = group, sampled, out, on_progress
        self.policies: dict[str, Policy] = {}
        self.errors: dict[str, dict] = {}
        self._store: Store | None = None

    def _tick(self) -> None:
        if self.on_progress:
            self.on_progress(1)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "evaluation" not in result:
            return
        m = Metrics.from_dict(result["evaluation"])
        opts = {k: v for k, v in result["options"].items()}
        extras = {**m.extras, "qat_options": opts, "trial_group": self.group}
        # salient weights (PB-LLM) are stored at their true cost, not the plain policy's
        m = dataclasses.replace(m, extras=extras).with_costs(
            evaluation_costs(self.cm, self.policies[m.policy_id], opts))
        if self.store.save_evaluation(self.study, m, kind=trial_kind(opts)):
            self.out.evaluated += 1
        else:
            self.out.reused += 1
        self._tick()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.out.recovered += 1

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        pid = trial.config.get("policy", "?")
        reason = _trial_error(trial)
        opts = {**self.options, **{k: v for k, v in trial.config.items() if k != "policy"}}
        self.errors[f"{pid}/{trial.trial_id}"] = {"policy_id": pid, "options": opts, "reason": reason}
        self.out.failed += 1
        self.out.failures.append(f"policy {pid}: {reason}")
        self._tick()


def _trial_error(trial: Any) -> str:
    """The last line of a failed trial's traceback (``ExcType: message``)."""
    import os

    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [l.strip() for l in f.read().splitlines() if l.strip()]
        if lines:
            return lines[-1][:300]
    return "trial failed"


def qat_trials(store: Store, study: StudyInfo, ctx: Any, top: int, options: Mapping[str, Any] | None = None,
               per_policy: int = 1, seed: int = 0, retries: int = 1,
               on_progress: Callable[[int], None] | None = None, max_concurrent: int | None = None,
               device: str = "cpu", eval_dtype: str = "float32") -> RefineResult:
    """Run the QAT trials the study still lacks for its ``top`` best PTQ-front policies.

    Args:
        ctx: the study's :class:`autocomp.stages.context.StudyContext`.
        options: the fixed ``qat`` options (:func:`qat_options`: validated, non-default).
        per_policy: trials per policy; above 1 an Optuna sampler picks each trial's estimator,
            its hyper-parameters and the learning rate (those ``options`` leave open).
        retries: Tune's ``max_failures``: how often a trial that raised is run again.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when the cluster reports GPUs): where the
            trials train and score (:func:`trial_resources`); not part of a trial's name.
        eval_dtype: the autocast dtype of the trials' scoring (``float32``, ``float16``, ``bfloat16``).

    Raises:
        AutocompError: ``cuda`` on a cluster without GPUs, before any trial starts.

    Returns:
        An :class:`autocomp.refine.RefineResult`: ``evaluated`` trials stored by this call,
        ``failed`` (with ``failures``: the reasons), ``recovered`` (retries), ``done`` (trials of
        this options set the study holds).
    """
    import optuna
    from ray import tune

    from autocomp.refine_qat import _tune_dir
    from autocomp.workers.qat import qat_trial
    from autocomp.workers.session import cluster_cpus

    from autocomp.devices import check_eval_dtype

    options = dict(options or {})
    check_eval_dtype(eval_dtype)
    group = trial_group(options, per_policy)
    pids = top_policies(store, study, top)
    todo = pending_trials(store, study, pids, options, per_policy)
    sampled = per_policy > 1
    result = RefineResult(optuna_study_name(study.name, f"qat-trials:{group}") if sampled else "")
    want = sum(todo.values())
    if want:
        policies = {p: Policy.from_dict(store.get_policy(study, p).policy) for p in todo}
        limit = max(1, max_concurrent or cluster_cpus())
        dev, resources = trial_resources(device, limit)
        cb = _StoreTrials(store.url, study, ctx.cm, options, group, sampled, result, on_progress)
        cb.policies = policies
        trainable = tune.with_resources(tune.with_parameters(
            qat_trial, spec=ctx.spec, policies={p: pol.to_dict() for p, pol in policies.items()}, options=options,
            placement={"device": dev, "eval_dtype": eval_dtype}), resources)
        run = tune.RunConfig(name=f"autocomp-{study.name}-qat-{group}-{_nonce()}", verbose=0,
                             storage_path=str(_tune_dir()), callbacks=[cb],
                             failure_config=tune.FailureConfig(max_failures=retries))
        qm = get_quality_metric(ctx.quality)
        if sampled:
            from ray.tune.search import ConcurrencyLimiter
            from ray.tune.search.optuna import OptunaSearch

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            mode = "max" if qm.higher_is_better else "min"
            storage = optuna_storage(store.url)
            ostudy = optuna.create_study(study_name=result.optuna_study, storage=storage, load_if_exists=True,
                                         direction="maximize" if mode == "max" else "minimize")
            _drop_unfinished(ostudy, storage)
            for pid, n in todo.items():   # the policy of each trial is fixed; the sampler picks the rest
                for _ in range(n):
                    ostudy.enqueue_trial({"policy": pid}, skip_if_exists=False)
            searcher = OptunaSearch(space=TrialSpace(list(todo), options), metric=qm.name, mode=mode,
                                    sampler=make_sampler("tpe", seed, max(4, want), mode=KIND),
                                    study_name=result.optuna_study, storage=storage)
            tuner = tune.Tuner(trainable, run_config=run, tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit), num_samples=want))
        else:
            tuner = tune.Tuner(trainable, run_config=run, param_space={"policy": tune.grid_search(list(todo))},
                               tune_config=tune.TuneConfig(max_concurrent_trials=limit))
        tuner.fit()
        store.save_record(study, RECORD + group, {"options": options, "per_policy": per_policy,
                                                  "failed": list(cb.errors.values())})
    left = pending_trials(store, study, pids, options, per_policy)
    result.done = sum(per_policy - left.get(p, 0) for p in pids)
    return result


def _drop_unfinished(ostudy: Any, storage: Any) -> None:
    """Trials a killed controller left waiting or running can never finish: mark them failed, so
    the sampler ignores them and the queue holds only this run's trials."""
    from optuna.trial import TrialState

    sid = storage.get_study_id_from_name(ostudy.study_name)
    for t in ostudy.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(sid, t.number),
                                       state=TrialState.FAIL)


def _nonce() -> str:
    import os
    import time

    return f"{os.getpid()}-{int(time.time() * 1000) % 10**8}"
