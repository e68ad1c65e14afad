"""QAT refinement: Ray Tune trials of the ``qat`` evaluator, chosen by Optuna (``OptunaSearch``).

QAT trials are expensive (seconds of fine-tuning each), so they run as Ray Tune trials
(:func:`autocomp.workers.qat.qat_trainable`); Optuna's sampler (TPE by default) lives in the
study database as ``<study>:qat``. This is the controller side: it seeds the searcher with the
study's PTQ front and stores each finished trial as it lands (a Tune callback, run in the
driver), as policies of source ``optuna-qat`` and evaluations of kind ``qat``.

Example:
    >>> from autocomp.refine_qat import refine_qat
    >>> res = refine_qat(store, study, spec="digits", layers=layers, space=space, budget=budget,
    ...                  cm=cm, n=4, epochs=2)                                  # doctest: +SKIP
    >>> res.done                                                                # doctest: +SKIP
    4
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ray.tune import Callback

from autocomp.budget import Budget, CostModel
from autocomp.evaluators import get_evaluator
from autocomp.metrics import Metrics, get_quality_metric
from autocomp.policy import Policy
from autocomp.profile import LayerInfo
from autocomp.refine import ParamSpace, RefineResult, make_sampler, optuna_storage, optuna_study_name
from autocomp.search_spaces import SearchSpace
from autocomp.store import Store
from autocomp.store.sealed import SealedURL
from autocomp.store.repository import StudyInfo

SOURCE = "optuna-qat"
KIND = "qat"


class StoreCallback(Callback):
    """A Tune callback (run in the driver) that writes to the study database: Tune pickles its
    callbacks with the experiment state, so the connection is opened lazily from ``self.url``
    (a :class:`~autocomp.store.sealed.SealedURL`: no password reaches Tune's files) and neither it
    nor ``on_progress`` is pickled. Subclasses set ``url``, ``_store = None`` and ``on_progress``."""

    url: SealedURL
    _store: Store | None
    on_progress: Callable[[int], None] | None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "on_progress": None}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.url.url)
        return self._store


class _StoreResults(StoreCallback):
    """Tune callback (runs in the driver): store each QAT result as it lands.

    Tune pickles its callbacks with the experiment state; the database connection is therefore
    opened lazily, and the URL is sealed (:class:`autocomp.store.sealed.SealedURL`): no password
    reaches Tune's files.
    """

    def __init__(self, url: str, study: StudyInfo, cm: CostModel, name: str, epochs: int, out: RefineResult,
                 on_progress: Callable[[int], None] | None):
        self.url, self.study, self.cm, self.name, self.epochs = SealedURL(url), study, cm, name, epochs
        super().__init__()
        self.out, self.on_progress, self._store = out, on_progress, None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "evaluation" not in result:
            return
        pol = Policy.from_dict(result["policy"])
        costs = self.cm.costs(pol, ("size", "bitops", "avg_bits"))
        self.store.save_policy(self.study, pol, SOURCE, f"QAT {self.epochs} epochs", costs,
                               {"optuna_study": self.name, "epochs": self.epochs})
        if self.store.save_evaluation(self.study, Metrics.from_dict(result["evaluation"]).with_costs(costs),
                                      kind=KIND):
            self.out.evaluated += 1
        else:
            self.out.reused += 1
        if self.on_progress:
            self.on_progress(1)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.out.failed += 1
        self.out.failures.append(f"QAT trial {trial.trial_id}: {trial.error_file or 'error'}")


def refine_qat(store: Store, study: StudyInfo, *, spec: str, layers: Sequence[LayerInfo], space: SearchSpace,
               budget: Budget, cm: CostModel, n: int, seed: int = 0, sampler: str = "auto", epochs: int = 2,
               quality: str = "accuracy", on_progress: Callable[[int], None] | None = None,
               max_concurrent: int | None = None) -> RefineResult:
    """Run QAT trials until the study holds ``n`` of them; Optuna picks policies through Ray Tune.

    The study's PTQ front seeds the sampler (``points_to_evaluate``); each finished trial is
    stored as it lands. Re-running with the same ``n`` runs nothing.

    Args:
        quality: the workload's quality metric (``Workload.quality``): its direction is the
            first objective's.

    Returns:
        An :class:`autocomp.refine.RefineResult`.
    """
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from autocomp.report import front
    from autocomp.workers.qat import qat_trainable
    from autocomp.workers.session import cluster_cpus

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    qm = get_quality_metric(quality)
    options = get_evaluator(KIND, epochs=epochs, seed=seed).options_dict()   # bad options fail here, once
    ps = ParamSpace(layers, space)
    name = optuna_study_name(study.name, KIND)
    result = RefineResult(name)

    done = store.evaluated_ids(study, kind=KIND)
    want = max(0, n - len(done))
    result.done = len(done)
    if want == 0:
        return result
    metrics = budget.metrics
    seeds = []
    for pt in front(store, study, costs=metrics, kind="ptq"):   # PTQ results seed the sampler
        if not pt["baseline"] and pt["policy_id"] not in done:
            params = ps.params_of(Policy.from_dict(store.get_policy(study, pt["policy_id"]).policy))
            if params is not None:
                seeds.append(params)
    seeds = seeds[:want]
    searcher = OptunaSearch(space=ps.distributions, metric=[qm.name, *metrics],
                            mode=["max" if qm.higher_is_better else "min"] + ["min"] * len(metrics),
                            points_to_evaluate=seeds or None,
                            sampler=make_sampler(sampler, seed, max(4, len(seeds)), mode=KIND),
                            study_name=name, storage=optuna_storage(store.url))
    limit = max(1, max_concurrent or cluster_cpus())
    trainable = tune.with_parameters(
        qat_trainable, spec=spec, names=[l.name for l in layers], fixed={k: c.key for k, c in ps.fixed.items()},
        groups=ps.params, options=options, cost_layers=[l.to_dict() for l in cm.layers],
        total_params=cm.total_params, metrics=list(metrics), layout=None if cm.layout is None else cm.layout.to_dict())
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit), num_samples=want),
        run_config=tune.RunConfig(name=f"autocomp-{study.name}-qat", verbose=0, storage_path=str(_tune_dir()),
                                  callbacks=[_StoreResults(store.url, study, cm, name, epochs, result, on_progress)]),
    )
    tuner.fit()
    result.done = len(store.evaluated_ids(study, kind=KIND))
    return result


def _tune_dir() -> Any:
    import os
    import tempfile
    from pathlib import Path

    p = Path(os.environ.get("AUTOCOMP_TUNE_DIR", Path(tempfile.gettempdir()) / "autocomp-tune"))
    p.mkdir(parents=True, exist_ok=True)
    return p
