"""Refinement: Optuna multi-objective search over per-layer choices, seeded with the allocator.

After the allocator's sweep, :func:`refine` runs ``n`` more PTQ evaluations chosen by an Optuna
sampler (NSGA-II by default, TPE or random on request) over the study's per-layer search space.
The objectives are accuracy (maximised) and every budgeted cost (minimised). Every policy the
study already evaluated (allocator points, uniform baselines) is enqueued first
(``study.enqueue_trial``) and told its stored result without being evaluated again, so the
sampler starts from the allocator's front rather than from random policies.

The Optuna study lives in the study database itself (``optuna.storages.RDBStorage`` on the same
URL, named after the autocomp study), so ``optuna-dashboard <db-url>`` shows the search live.
Every candidate is also stored as an autocomp policy (source ``optuna``) with its evaluation, so
fronts and reports include it. Re-running resumes: trials already complete are not asked again,
and a trial left running by a killed controller is told its stored result, or evaluated again.

Example:
    >>> from autocomp.refine import optuna_study_name, open_optuna_study
    >>> optuna_study_name("first")
    'first'
    >>> study = open_optuna_study("sqlite:///autocomp.db", "first")   # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from autocomp.budget import Budget, CostModel
from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.search_spaces import SearchSpace
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

SAMPLERS = ("auto", "nsga2", "tpe", "random")
SOURCE = "optuna"


def optuna_study_name(study_name: str, mode: str = "ptq") -> str:
    """The Optuna study of autocomp study ``study_name`` (QAT trials get their own)."""
    return study_name if mode == "ptq" else f"{study_name}:{mode}"


def optuna_storage(url: str) -> Any:
    """``RDBStorage`` on the study database (psycopg 3 for ``postgresql://``, as :class:`Store`)."""
    import optuna
    from sqlalchemy.engine import make_url

    from autocomp.store.repository import normalize_url

    u = make_url(normalize_url(url))
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    return optuna.storages.RDBStorage(u.render_as_string(hide_password=False), engine_kwargs=kwargs)


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
        allowed = {l.name: space.choices_for(l, len(layers)) for l in layers}
        group_of: dict[str, list[str]] = {}
        for g in space.tie_groups(layers):
            for n in g:
                group_of[n] = g
        self.params: dict[str, list[str]] = {}    # parameter -> layers it sets
        self.fixed: dict[str, Choice] = {}
        self.distributions: dict[str, Any] = {}
        for n in self.names:
            g = group_of.get(n, [n])
            if n != g[0]:
                continue
            keys = [c.key for c in allowed[g[0]] if all(c in allowed[m] for m in g)]
            if not keys:
                raise AutocompError(f"search space {space.name!r}: tied layers {g} share no choice")
            if len(keys) == 1:
                for m in g:
                    self.fixed[m] = Choice.from_key(keys[0])
                continue
            self.params[n] = list(g)
            self.distributions[n] = CategoricalDistribution(keys)

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


def objective_names(budget: Budget) -> list[str]:
    return ["accuracy", *budget.metrics]


def refine(store: Store, study: StudyInfo, *, spec: str, layers: Sequence[LayerInfo], space: SearchSpace,
           budget: Budget, cm: CostModel, n: int, workers: int | None = None, seed: int = 0,
           sampler: str = "auto", on_progress: Callable[[int], None] | None = None,
           evaluate_batch: Callable | None = None) -> RefineResult:
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
        on_progress: called with the number of new evaluations as they land.
        evaluate_batch: ``f(policies, on_result, on_error)``; default: a :class:`PTQPool` on Ray.

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
    directions = ["maximize"] + ["minimize"] * len(metrics)
    name = optuna_study_name(study.name)
    storage = optuna_storage(store.url)
    result = RefineResult(name)

    stored = _stored_values(store, study, cm, metrics)
    seeds = []
    for p in store.list_policies(study):
        pol = Policy.from_dict(p.policy)
        params = ps.params_of(pol) if p.policy_id in stored else None
        if params is not None and not cm.violations(pol, budget):
            seeds.append((p.policy_id, params))
    population = max(8, min(50, len(seeds)))
    ostudy = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True,
                                 sampler=make_sampler(sampler, seed, population))
    if [d.name.lower() for d in ostudy.directions] != directions:
        raise AutocompError(f"Optuna study {name!r} has {len(ostudy.directions)} objectives, this budget "
                            f"{len(directions)}: refine under another --study name")
    with warnings.catch_warnings():  # experimental API, stable since Optuna 3.2: names show in the dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ostudy.set_metric_names(objective_names(budget))
    ostudy.set_user_attr("autocomp_study", study.name)

    trials = ostudy.get_trials(deepcopy=False)
    # A controller killed mid-batch leaves RUNNING trials: tell what the store holds, redo the rest.
    for t in trials:
        if t.state == TrialState.RUNNING:
            pid = t.user_attrs.get("policy_id")
            if pid in stored:
                ostudy.tell(t.number, stored[pid])
            else:
                ostudy.tell(t.number, state=TrialState.FAIL)
                ostudy.enqueue_trial(t.params, user_attrs={"role": "retry", "policy_id": pid})
            result.recovered += 1
    known = {t.user_attrs.get("policy_id") for t in trials}
    for pid, params in seeds:
        if pid not in known:
            ostudy.enqueue_trial(params, user_attrs={"role": "seed", "policy_id": pid})

    def done_count() -> int:
        return sum(1 for t in ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if t.user_attrs.get("role") == "refine")

    result.done = done_count()
    want = max(0, n - result.done)
    batch_size = max(1, workers or _default_workers())
    max_asks = 20 * want + len(seeds) + 10   # a converged sampler re-proposes known policies
    asks = 0
    pool = None
    try:
        while result.evaluated + result.failed < want and asks < max_asks:
            batch: list[tuple[Any, Policy]] = []
            repeats: list[tuple[Any, str]] = []
            while (len(batch) < batch_size and result.evaluated + result.failed + len(batch) < want
                   and asks < max_asks):
                t = ostudy.ask(ps.distributions)
                asks += 1
                pol = ps.policy_of(t.params)
                t.set_user_attr("policy_id", pol.id)
                costs = cm.costs(pol, ("size", "bitops", "avg_bits"))
                bad = cm.violations(pol, budget)
                if pol.id in stored:
                    ostudy.tell(t, stored[pol.id])
                    result.reused += 1
                elif bad:
                    # Over budget: not worth an evaluation; FAIL keeps it out of the population.
                    t.set_user_attr("rejected", "; ".join(bad))
                    ostudy.tell(t, state=TrialState.FAIL)
                    result.rejected += 1
                elif any(p.id == pol.id for _, p in batch):
                    repeats.append((t, pol.id))
                else:
                    t.set_user_attr("role", "refine")
                    store.save_policy(study, pol, SOURCE, f"optuna trial {t.number}", costs,
                                      {"optuna_study": name, "trial": t.number, "sampler": sampler})
                    batch.append((t, pol))
            if not batch and not repeats:
                continue
            landed: dict[str, dict] = {}
            errors: dict[str, str] = {}

            def on_result(res: dict) -> None:
                pid = res["policy_id"]
                store.save_evaluation(study, pid, {**res, **_costs_for(batch, pid, cm)})
                landed[pid] = res
                if on_progress:
                    on_progress(1)

            def on_error(pid: str, e: BaseException) -> None:
                errors[pid] = f"{pid}: {type(e).__name__}"
                if on_progress:
                    on_progress(1)

            if batch:
                if evaluate_batch is None:
                    if pool is None:
                        from autocomp.workers.pool import PTQPool

                        pool = PTQPool(spec, workers=batch_size)
                    pool.map([p for _, p in batch], on_result, on_error)
                else:
                    evaluate_batch([p for _, p in batch], on_result, on_error)
            # Tell in ask order so that a seeded sampler sees the same history however results land.
            for t, pol in batch:
                if pol.id in landed:
                    stored[pol.id] = _values(landed[pol.id]["accuracy"], cm, pol, metrics)
                    ostudy.tell(t, stored[pol.id])
                    result.evaluated += 1
                else:
                    ostudy.tell(t, state=TrialState.FAIL)
                    result.failed += 1
                    result.failures.append(errors.get(pol.id, f"{pol.id}: lost"))
            for t, pid in repeats:
                if pid in stored:
                    ostudy.tell(t, stored[pid])
                    result.reused += 1
                else:
                    ostudy.tell(t, state=TrialState.FAIL)
    finally:
        if pool is not None:
            pool.close()
    result.done = done_count()
    return result


def _default_workers() -> int:
    from autocomp.workers.session import cluster_cpus

    return cluster_cpus()


def _costs_for(batch: Sequence[tuple[Any, Policy]], pid: str, cm: CostModel) -> dict[str, float]:
    for _, p in batch:
        if p.id == pid:
            return cm.costs(p, ("size", "bitops", "avg_bits"))
    return {}


def _values(accuracy: float, cm: CostModel, policy: Policy, metrics: Sequence[str]) -> list[float]:
    return [float(accuracy), *(cm.cost(m, policy) for m in metrics)]


def _stored_values(store: Store, study: StudyInfo, cm: CostModel, metrics: Sequence[str]) -> dict[str, list[float]]:
    """Objective values of every evaluated policy of the study, by policy id."""
    pols = {p.policy_id: p for p in store.list_policies(study)}
    out = {}
    for e in store.list_evaluations(study, kind="ptq"):
        if e.policy_id in pols:
            out[e.policy_id] = _values(e.accuracy, cm, Policy.from_dict(pols[e.policy_id].policy), metrics)
    return out
