"""Quantization-aware fine-tuning (QAT) as Ray Tune trials, chosen by Optuna (``OptunaSearch``).

A QAT trial fine-tunes the compressed model for a few epochs on the workload's calibration
batches with a straight-through estimator (the forward pass sees pruned, fake-quantized weights
and activations; the gradient flows to the float weights as if quantization were the identity),
then re-calibrates activation ranges and scores the compressed model exactly as PTQ does.
Trials are expensive, so they run as Ray Tune trials; Optuna's sampler (TPE by default) lives in
the study database as ``<study>:qat``; results are stored as policies with source ``optuna-qat``
and evaluations of kind ``qat``.

Example:
    >>> from autocomp.workers.qat import qat_evaluate
    >>> qat_evaluate("digits", policy.to_dict(), epochs=2)["accuracy"]     # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from ray.tune import Callback
from torch.nn.utils import parametrize

from autocomp.budget import Budget, CostModel
from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.policy import Choice, Policy, apply
from autocomp.profile import LayerInfo
from autocomp.quant import compress_weight, fake_quant_act, is_float
from autocomp.search_spaces import SearchSpace
from autocomp.store import Store
from autocomp.store.repository import StudyInfo
from autocomp.workers.runtime_env import worker_spec
from autocomp.workload import load_workload

SOURCE = "optuna-qat"
KIND = "qat"
_ACT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)


class _STEWeight(torch.nn.Module):
    """Weight parametrization: forward = compressed weight, backward = identity (STE)."""

    def __init__(self, choice: Choice, transposed: bool):
        super().__init__()
        self.bits, self.prune, self.transposed = choice.w_bits, choice.prune, transposed

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        src = w.t() if self.transposed else w
        q = compress_weight(src.detach(), self.bits, self.prune)
        q = q.t() if self.transposed else q
        return w + (q - w).detach()


class _STEAct:
    """Input fake-quant pre-hook with a straight-through gradient."""

    def __init__(self, lo: float, hi: float, bits: int):
        self.lo, self.hi, self.bits = lo, hi, bits

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (x + (fake_quant_act(x, self.lo, self.hi, self.bits) - x).detach(),) + tuple(args[1:])


def _ranges(model: torch.nn.Module, names: Sequence[str], batches: Sequence) -> dict:
    return activation_ranges(activation_stats(model, list(names), batches), _ACT_BITS)


def qat_finetune(model: torch.nn.Module, policy: Policy, batches: Sequence, loss: Callable, epochs: int = 2,
                 lr: float = 1e-3, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of ``model`` under ``policy`` with STE; returns (float model, act ranges).

    Batch-norm statistics stay frozen (eval mode): a few calibration batches are too few to
    re-estimate them, and PTQ scores the model with the same statistics.
    """
    import copy

    torch.manual_seed(seed)
    m = copy.deepcopy(model).eval()
    names = [n for n, _ in policy.layers]
    ranges = _ranges(m, names, batches)
    modules = dict(m.named_modules())
    hooks = []
    for name, ch in policy.layers:
        mod = modules[name]
        if not is_float(ch.w_bits) or ch.prune > 0:
            parametrize.register_parametrization(mod, "weight", _STEWeight(ch, type(mod).__name__ == "Conv1D"))
        if not is_float(ch.a_bits):
            lo, hi = ranges[name].get(int(ch.a_bits), ranges[name][max(ranges[name])])
            hooks.append(mod.register_forward_pre_hook(_STEAct(lo, hi, int(ch.a_bits))))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(max(0, epochs)):
        for x, y in batches:
            opt.zero_grad()
            loss(m(x), y).backward()
            opt.step()
    for h in hooks:
        h.remove()
    for name, _ in policy.layers:
        mod = modules[name]
        if parametrize.is_parametrized(mod, "weight"):
            # Keep the latent float weights: ``apply`` quantizes them again below.
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
    return m.eval(), _ranges(m, names, batches)


def qat_evaluate(spec: str, policy: dict, epochs: int = 2, lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Fine-tune under ``policy`` (a ``Policy.to_dict()``) and score; returns PTQ-style metrics."""
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    wl = load_workload(worker_spec(spec))
    pol = Policy.from_dict(policy)
    tuned, ranges = qat_finetune(wl.model(), pol, wl.calib, wl.loss, epochs=epochs, lr=lr, seed=seed)
    acc = wl.evaluate(apply(tuned, pol, ranges))
    return {"policy_id": pol.id, "accuracy": float(acc), "epochs": epochs, "seconds": time.perf_counter() - t0}


def qat_trainable(config: dict, spec: str = "digits", names: Sequence[str] = (), fixed: dict | None = None,
                  groups: dict | None = None, epochs: int = 2, lr: float = 1e-3, seed: int = 0,
                  cost_layers: Sequence[dict] = (), total_params: int | None = None,
                  metrics: Sequence[str] = ()) -> None:
    """Ray Tune function trainable: ``config`` holds a choice key per free layer (or tie group).

    Reports the accuracy after QAT, the policy, and its ``metrics`` costs (the Optuna objectives).
    """
    from ray import tune

    ch = {n: Choice.from_key(k) for n, k in (fixed or {}).items()}
    for p, members in (groups or {}).items():
        for m in members:
            ch[m] = Choice.from_key(config[p])
    pol = Policy.from_choices([(n, ch[n]) for n in names])
    res = qat_evaluate(spec, pol.to_dict(), epochs=epochs, lr=lr, seed=seed)
    cm = CostModel([LayerInfo.from_dict(d) for d in cost_layers], total_params=total_params)
    tune.report({**res, **{m: cm.cost(m, pol) for m in metrics}, "policy": pol.to_dict()})


class _StoreResults(Callback):
    """Tune callback body (runs in the driver): store each QAT result as it lands.

    Tune pickles its callbacks with the experiment state; the database connection is therefore
    opened lazily from the URL and never pickled.
    """

    def __init__(self, url: str, study: StudyInfo, cm: CostModel, name: str, epochs: int, out: Any,
                 on_progress: Callable[[int], None] | None):
        self.url, self.study, self.cm, self.name, self.epochs = url, study, cm, name, epochs
        super().__init__()
        self.out, self.on_progress, self._store = out, on_progress, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "on_progress": None}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.url)
        return self._store

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "policy" not in result:
            return
        pol = Policy.from_dict(result["policy"])
        costs = self.cm.costs(pol, ("size", "bitops", "avg_bits"))
        self.store.save_policy(self.study, pol, SOURCE, f"QAT {self.epochs} epochs", costs,
                               {"optuna_study": self.name, "epochs": self.epochs})
        metrics = {"accuracy": result["accuracy"], "seconds": result.get("seconds"), "epochs": self.epochs, **costs}
        if self.store.save_evaluation(self.study, pol.id, metrics, kind=KIND):
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
               on_progress: Callable[[int], None] | None = None, max_concurrent: int | None = None):
    """Run QAT trials until the study holds ``n`` of them; Optuna picks policies through Ray Tune.

    The study's PTQ front seeds the sampler (``points_to_evaluate``); each finished trial is
    stored as it lands. Re-running with the same ``n`` runs nothing.

    Returns:
        An :class:`autocomp.refine.RefineResult`.
    """
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from autocomp.refine import ParamSpace, RefineResult, make_sampler, optuna_storage, optuna_study_name
    from autocomp.report import front
    from autocomp.workers.session import cluster_cpus

    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
    for pt in front(store, study, costs=metrics):
        if not pt["baseline"] and pt["policy_id"] not in done:
            params = ps.params_of(Policy.from_dict(store.get_policy(study, pt["policy_id"]).policy))
            if params is not None:
                seeds.append(params)
    seeds = seeds[:want]
    searcher = OptunaSearch(space=ps.distributions, metric=["accuracy", *metrics],
                            mode=["max"] + ["min"] * len(metrics), points_to_evaluate=seeds or None,
                            sampler=make_sampler(sampler, seed, max(4, len(seeds)), mode=KIND),
                            study_name=name, storage=optuna_storage(store.url))
    limit = max(1, max_concurrent or cluster_cpus())
    trainable = tune.with_parameters(
        qat_trainable, spec=spec, names=[l.name for l in layers], fixed={k: c.key for k, c in ps.fixed.items()},
        groups=ps.params, epochs=epochs, seed=seed, cost_layers=[l.to_dict() for l in cm.layers],
        total_params=cm.total_params, metrics=list(metrics))
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
