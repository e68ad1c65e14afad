"""Refinement: Optuna multi-objective search over per-layer choices, seeded with the allocator.

After the allocator's sweep, :func:`refine` runs ``n`` more PTQ evaluations chosen by an Optuna
sampler (NSGA-II by default, TPE or random on request) over the study's per-layer search space.
The objectives are the workload's quality metric, in its direction (accuracy maximised,
perplexity minimised: :mod:`autocomp.metrics`), and every budgeted cost (minimised). Every policy the
study already evaluated (allocator points, uniform baselines) is enqueued first
(``study.enqueue_trial``) and told its stored result without being evaluated again, so the
sampler starts from the allocator's front rather than from random policies.

The Optuna study lives in the study database itself (``optuna.storages.RDBStorage`` on the same
URL, named after the autocomp study), so ``optuna-dashboard <db-url>`` shows the search live.
Every candidate is also stored as an autocomp policy (source ``optuna``) with its evaluation, so
fronts and reports include it.

Refinement runs in batches (one candidate per worker). Batch ``k`` is asked in an in-memory copy of
the stored history, by a sampler seeded with ``(seed, k)``, so its candidates are a pure function
of the finished batches before it; its trials reach the stored study only once they are finished.
A controller killed anywhere (asking, evaluating, writing) therefore resumes to exactly the trials,
evaluations and front of an uninterrupted run: the batch is asked again identically, evaluations
already stored are not redone, and trials already written are not written twice.

Example:
    >>> from autocomp.refine import optuna_study_name, open_optuna_study
    >>> optuna_study_name("first")
    'first'
    >>> study = open_optuna_study("sqlite:///autocomp.db", "first")   # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from autocomp.budget import Budget, CostModel
from autocomp.errors import AutocompError
from autocomp.metrics import Metrics, get_quality_metric
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.search_spaces import SearchSpace
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

SAMPLERS = ("auto", "nsga2", "tpe", "random")
SOURCE = "optuna"
_BATCH_SIZE = "autocomp_batch_size"   # Optuna study user attr: batches are the unit of reproducibility


def _batch_seed(seed: int, batch: int) -> int:
    return (seed * 1_000_003 + batch) % (2**31 - 1)


def optuna_study_name(study_name: str, mode: str = "ptq") -> str:
    """The Optuna study of autocomp study ``study_name`` (QAT trials get their own)."""
    return study_name if mode == "ptq" else f"{study_name}:{mode}"


def optuna_storage(url: str) -> Any:
    """``RDBStorage`` on the study database (psycopg 3 for ``postgresql://``, as :class:`Store`)."""
    from sqlalchemy.engine import make_url

    from autocomp.store.repository import normalize_url
    from autocomp.store.sealed import SealedRDBStorage

    u = make_url(normalize_url(url))
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    # Tune pickles its searcher (and this storage in it) into its state files: sealed, no password.
    return SealedRDBStorage(u.render_as_string(hide_password=False), engine_kwargs=kwargs)


def open_optuna_study(url: str, study_name: str, mode: str = "ptq") -> Any:
    """Load the refinement's Optuna study of ``study_name`` (as ``optuna-dashboard`` would)."""
    import optuna

    try:
        return optuna.load_study(study_name=optuna_study_name(study_name, mode), storage=optuna_storage(url))
    except KeyError as e:
        raise AutocompError(f"study {study_name!r} has no {mode} refinement in {url}: run "
                            f"`autocomp search --study {study_name} --refine N`") from e


def make_sampler(name: str, seed: int, population: int = 16, mode: str = "ptq") -> Any:
    """NSGA-II for cheap PTQ batches; TPE where few expensive trials run (``auto`` picks)."""
    import optuna

    if name == "auto":
        name = "nsga2" if mode == "ptq" else "tpe"
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, population // 2), multivariate=True,
                                          group=False, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise AutocompError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")


class ParamSpace:
    """Maps policies to Optuna parameters and back: one categorical per free layer (or tie group).

    Layers with a single allowed choice are fixed; tied layers share one parameter named after
    the group's first layer, over the choices every member allows.

    Example:
        >>> ps = ParamSpace(layers, load_space("mixed_precision"))      # doctest: +SKIP
        >>> ps.policy_of(ps.params_of(policy)) == policy                # doctest: +SKIP
        True
    """

    def __init__(self, layers: Sequence[LayerInfo], space: SearchSpace):
        from optuna.distributions import CategoricalDistribution

        self.names = [l.name for l in layers]
        resolved = space.resolved_choices(layers)
        self.params: dict[str, list[str]] = {}    # parameter -> layers it sets
        self.fixed: dict[str, Choice] = {}
        self.distributions: dict[str, Any] = {}
        for unit in resolved.units():
            keys = [c.key for c in resolved.choices[unit[0]]]
            if len(keys) == 1:
                for m in unit:
                    self.fixed[m] = Choice.from_key(keys[0])
                continue
            self.params[unit[0]] = unit
            self.distributions[unit[0]] = CategoricalDistribution(keys)

    def policy_of(self, params: dict[str, Any]) -> Policy:
        ch = dict(self.fixed)
        for p, members in self.params.items():
            for m in members:
                ch[m] = Choice.from_key(params[p])
        return Policy.from_choices([(n, ch[n]) for n in self.names])

    def params_of(self, policy: Policy) -> dict[str, str] | None:
        """Parameters of ``policy``, or ``None`` when it lies outside the space."""
        ch = policy.as_dict()
        if list(ch) != self.names:
            return None
        if any(ch[n] != c for n, c in self.fixed.items()):
            return None
        out = {}
        for p, members in self.params.items():
            key = ch[p].key
            if key not in self.distributions[p].choices or any(ch[m] != ch[p] for m in members):
                return None
            out[p] = key
        return out


@dataclass
class RefineResult:
    """What one :func:`refine` call did (counts are for this call; ``done`` is the study's total)."""

    optuna_study: str
    evaluated: int = 0
    reused: int = 0
    rejected: int = 0
    failed: int = 0
    recovered: int = 0
    done: int = 0
    failures: list[str] = field(default_factory=list)


def objective_names(budget: Budget, quality: str = "accuracy") -> list[str]:
    """The Optuna objectives: the quality metric, then the budget's cost metrics."""
    return [quality, *budget.metrics]


def refine(store: Store, study: StudyInfo, *, spec: str, layers: Sequence[LayerInfo], space: SearchSpace,
           budget: Budget, cm: CostModel, n: int, workers: int | None = None, seed: int = 0,
           sampler: str = "auto", quality: str = "accuracy", on_progress: Callable[[int], None] | None = None,
           evaluate_batch: Callable | None = None, options: Mapping[str, Any] | None = None) -> RefineResult:
    """Run refinement until study ``study`` holds ``n`` evaluations chosen by Optuna.

    Args:
        store: the study database (the Optuna study is stored there too).
        study: the autocomp study; its evaluated policies seed the sampler.
        spec: the workload's ``--model`` string (the actors load it).
        layers, space, budget, cm: the study's layers, search space, budget and cost model.
        n: total refinement evaluations wanted (re-running with the same ``n`` does nothing).
        workers: evaluator actors, and so the batch size of each ask/tell round.
        seed: sampler seed.
        sampler: ``auto`` (NSGA-II), ``nsga2``, ``tpe`` or ``random``.
        quality: the workload's quality metric (``Workload.quality``): its direction is the first
            objective's.
        on_progress: called with the number of new evaluations as they land.
        evaluate_batch: ``f(policies, on_result, on_error)`` with ``on_result(Metrics)`` and
            ``on_error(policy_id, exception)``; default: a ``ptq``
            :class:`~autocomp.workers.pool.EvaluatorPool` on Ray.
        options: that pool's evaluator options (device, eval_dtype, quantizer), as the search's.

    Returns:
        A :class:`RefineResult`; failed evaluations are listed, not raised.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ps = ParamSpace(layers, space)
    if not ps.params:
        raise AutocompError(f"search space {space.name!r} leaves no layer a choice: nothing to refine")
    metrics = budget.metrics
    directions = [get_quality_metric(quality).direction] + ["minimize"] * len(metrics)
    name = optuna_study_name(study.name)
    storage = optuna_storage(store.url)
    result = RefineResult(name)

    stored = _stored_values(store, study, cm, metrics)
    # Seeds are the search's own policies (not earlier refinement), so a resumed refinement
    # builds the same sampler as the run it continues.
    seeds = []
    for p in store.list_policies(study):
        pol = Policy.from_dict(p.policy)
        params = ps.params_of(pol) if p.policy_id in stored and p.source != SOURCE else None
        if params is not None and not cm.violations(pol, budget):
            seeds.append((p.policy_id, params))
    population = max(8, min(50, len(seeds)))
    ostudy = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True,
                                 sampler=optuna.samplers.RandomSampler(seed=seed))   # never asked: see plan()
    have = [d.name.lower() for d in ostudy.directions]
    if len(have) != len(directions):
        raise AutocompError(f"Optuna study {name!r} has {len(have)} objectives, this budget "
                            f"{len(directions)}: refine under another --study name")
    if have != directions:
        raise AutocompError(f"Optuna study {name!r} optimises {'/'.join(have)}, this run {'/'.join(directions)} "
                            f"({quality!r} is {directions[0]}d): refine under another --study name")
    with warnings.catch_warnings():  # experimental API, stable since Optuna 3.2: names show in the dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ostudy.set_metric_names(objective_names(budget, quality))
    ostudy.set_user_attr("autocomp_study", study.name)
    # The batch size is fixed at the first run: batches are the unit of reproducibility.
    batch_size = int(ostudy.user_attrs.get(_BATCH_SIZE) or max(1, workers or _default_workers()))
    ostudy.set_user_attr(_BATCH_SIZE, batch_size)

    # Trials left RUNNING in the stored study (asked there by an older autocomp, or by another
    # tool) are closed with what the store holds: autocomp itself only ever writes finished trials.
    for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("policy_id")
        if pid in stored:
            ostudy.tell(t.number, stored[pid])
        else:
            ostudy.tell(t.number, state=TrialState.FAIL)
        result.recovered += 1
    hist = sorted((t for t in ostudy.get_trials(deepcopy=True) if t.state.is_finished()), key=lambda t: t.number)
    k = 1 + max((int(t.user_attrs.get("batch", -1)) for t in hist), default=-1)
    # A batch whose trials were being written when the controller died is planned again and
    # completed: its first trials are already stored.
    written: list[Any] = []
    last = [t for t in hist if t.user_attrs.get("batch") == k - 1]
    if last and len(last) < int(last[0].user_attrs.get("batch_len", len(last))):
        k, written = k - 1, last
        hist = [t for t in hist if t.user_attrs.get("batch") != k]

    pool = None

    def run(policies: list[Policy], landed: dict, errors: dict) -> None:
        nonlocal pool

        def on_result(res: Metrics) -> None:
            pid = res.policy_id
            pol = next(p for p in policies if p.id == pid)
            store.save_evaluation(study, res.with_costs(cm.costs(pol, ("size", "bitops", "avg_bits"))))
            landed[pid] = res
            if on_progress:
                on_progress(1)

        def on_error(pid: str, e: BaseException) -> None:
            errors[pid] = f"{pid}: {type(e).__name__}"
            if on_progress:
                on_progress(1)

        if not policies:
            return
        if evaluate_batch is not None:
            evaluate_batch(policies, on_result, on_error)
            return
        if pool is None:
            from autocomp.workers.pool import EvaluatorPool

            pool = EvaluatorPool(spec, "ptq", options, workers=batch_size)
        pool.map(policies, on_result, on_error)

    def plan(k: int, room: int) -> tuple[Any, list[Policy], list[Any]]:
        """Batch ``k``'s candidates, asked in memory: a pure function of ``hist``, the seeds, seed and k.

        Nothing is written to the Optuna storage while asking, so a controller killed here leaves
        nothing behind, and the resumed run asks exactly the same candidates.
        """
        mem = optuna.create_study(directions=directions, sampler=make_sampler(sampler, _batch_seed(seed, k),
                                                                               population))
        mem.add_trials(hist)
        values = {t.user_attrs["policy_id"]: list(t.values) for t in hist
                  if t.state == TrialState.COMPLETE and "policy_id" in t.user_attrs}
        known = {t.user_attrs.get("policy_id") for t in hist}
        fresh = [(pid, params) for pid, params in seeds if pid not in known]
        for pid, params in fresh:
            mem.enqueue_trial(params, user_attrs={"role": "seed", "policy_id": pid})
            values[pid] = stored[pid]
        batch: list[Policy] = []
        asked: list[Any] = []
        cap = 20 * batch_size + len(fresh) + 10   # a converged sampler re-proposes known policies
        for _ in range(cap):
            if len(batch) >= min(batch_size, room):
                break
            t = mem.ask(ps.distributions)
            pol = ps.policy_of(t.params)
            t.set_user_attr("policy_id", pol.id)
            t.set_user_attr("batch", k)
            bad = cm.violations(pol, budget)
            if pol.id in values:
                mem.tell(t, values[pol.id])
            elif bad:
                # Over budget: not worth an evaluation; FAIL keeps it out of the population.
                t.set_user_attr("rejected", "; ".join(bad))
                mem.tell(t, state=TrialState.FAIL)
            elif any(p.id == pol.id for p in batch):
                asked.append(t)   # a repeat inside the batch: told with the first's result
            else:
                t.set_user_attr("role", "refine")
                batch.append(pol)
                asked.append(t)
        return mem, batch, asked

    def refined(trials: Sequence[Any]) -> int:
        return sum(1 for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("role") == "refine")

    result.done = refined(hist + written)
    try:
        while refined(hist) + result.failed < n:
            mem, batch, asked = plan(k, n - refined(hist) - result.failed)
            for t, pol in zip([t for t in asked if t.user_attrs.get("role") == "refine"], batch):
                store.save_policy(study, pol, SOURCE, f"optuna trial {t.number}",
                                  cm.costs(pol, ("size", "bitops", "avg_bits")),
                                  {"optuna_study": name, "trial": t.number, "sampler": sampler})
            # Evaluations stored by an interrupted run of this batch are not redone.
            todo = [p for p in batch if p.id not in stored]
            result.recovered += len(batch) - len(todo)
            landed: dict[str, Metrics] = {}
            errors: dict[str, str] = {}
            run(todo, landed, errors)
            for t in sorted(asked, key=lambda t: t.number):   # ask order: same history however results land
                pid = t.user_attrs["policy_id"]
                if pid in landed:
                    stored[pid] = _values(landed[pid].quality, cm, ps.policy_of(t.params), metrics)
                    result.evaluated += int(t.user_attrs.get("role") == "refine")
                if pid in stored:
                    mem.tell(t.number, stored[pid])
                else:
                    mem.tell(t.number, state=TrialState.FAIL)
                    if t.user_attrs.get("role") == "refine":
                        result.failed += 1
                        result.failures.append(errors.get(pid, f"{pid}: lost"))
            new = [t for t in mem.get_trials(deepcopy=True)[len(hist):] if t.state.is_finished()]
            for t in new:
                t.user_attrs = {**t.user_attrs, "batch_len": len(new)}
                role = t.user_attrs.get("role")
                result.reused += int(role != "refine" and t.state == TrialState.COMPLETE)
                result.rejected += int("rejected" in t.user_attrs)
            if [t.user_attrs.get("policy_id") for t in written] != [t.user_attrs.get("policy_id")
                                                                    for t in new[:len(written)]]:
                raise AutocompError(f"Optuna study {name!r} does not replay (it was changed outside autocomp, "
                                    "or by another version): refine under another --study name")
            ostudy.add_trials(new[len(written):])   # the batch's trials, finished, in ask order
            hist, written, k = hist + new, [], k + 1
            if not batch:
                break   # the sampler only re-proposes known or over-budget policies
    finally:
        if pool is not None:
            pool.close()
    result.done = refined(hist)
    return result


def _default_workers() -> int:
    from autocomp.workers.session import cluster_cpus

    return cluster_cpus()


def _values(quality: float, cm: CostModel, policy: Policy, metrics: Sequence[str]) -> list[float]:
    return [float(quality), *(cm.cost(m, policy) for m in metrics)]


def _stored_values(store: Store, study: StudyInfo, cm: CostModel, metrics: Sequence[str]) -> dict[str, list[float]]:
    """Objective values of every evaluated policy of the study, by policy id."""
    pols = {p.policy_id: p for p in store.list_policies(study)}
    out = {}
    for e in store.list_evaluations(study, kind="ptq"):
        if e.policy_id in pols:
            out[e.policy_id] = _values(e.quality, cm, Policy.from_dict(pols[e.policy_id].policy), metrics)
    return out
