"""The QAT Ray Tune trainables: what runs on the worker for one QAT trial.

:func:`qat_trainable` serves ``--refine-mode qat`` (Optuna picks the policy);
:func:`qat_trial` serves ``--trials qat`` (a stored policy, fine-tuned with given or sampled
options; controller :mod:`autocomp.trials`).

The trial builds its policy from Tune's ``config`` (one choice key per free layer or tie group),
runs the ``qat`` evaluator (:mod:`autocomp.evaluators.qat`) and reports the quality, the budget's
costs (Optuna's objectives: ``OptunaSearch`` reads them from the report) and the
:class:`~autocomp.metrics.Metrics`. The controller side (the searcher, storing results as they
land) is :mod:`autocomp.refine_qat`; nothing here writes to the study database.

Example:
    >>> from ray import tune
    >>> trainable = tune.with_parameters(qat_trainable, spec="digits", names=names)   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from autocomp.budget import CostModel
from autocomp.layout import FileLayout
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo


def qat_trainable(config: dict, spec: str = "digits", names: Sequence[str] = (), fixed: dict | None = None,
                  groups: dict | None = None, options: dict | None = None, cost_layers: Sequence[dict] = (),
                  total_params: int | None = None, metrics: Sequence[str] = (),
                  layout: dict | None = None) -> None:
    """Ray Tune function trainable for one QAT trial.

    Args:
        config: Tune's sample: a choice key per free layer (or tie group, named by its first layer).
        spec: the ``--model`` string (remapped for cluster workers).
        names: every layer of the policy, in order.
        fixed: layer -> choice key of layers with a single allowed choice.
        groups: parameter -> the layers it sets.
        options: the ``qat`` evaluator's options (epochs, lr, seed).
        cost_layers, total_params, layout: the cost model's layers (``LayerInfo.to_dict``),
            parameter count and file layout (``FileLayout.to_dict``; None: the earlier size accounting).
        metrics: the budget's cost metrics, reported as Optuna objectives.
    """
    import torch
    from ray import tune

    from autocomp.evaluators import get_evaluator
    from autocomp.workers.runtime_env import worker_spec
    from autocomp.workload import load_workload

    torch.set_num_threads(1)   # the trial holds one CPU
    ch = {n: Choice.from_key(k) for n, k in (fixed or {}).items()}
    for p, members in (groups or {}).items():
        for m in members:
            ch[m] = Choice.from_key(config[p])
    pol = Policy.from_choices([(n, ch[n]) for n in names])
    wl = load_workload(worker_spec(spec))
    res = get_evaluator("qat", **(options or {})).evaluate(wl, pol)
    cm = CostModel([LayerInfo.from_dict(d) for d in cost_layers], total_params=total_params,
                   layout=FileLayout.from_dict(layout) if layout else None)
    tune.report({res.quality_metric: res.quality, **{m: cm.cost(m, pol) for m in metrics},
                 "policy": pol.to_dict(), "evaluation": res.to_dict()})


def qat_trial(config: dict, spec: str = "digits", policies: dict | None = None, options: dict | None = None,
              placement: dict | None = None) -> None:
    """Ray Tune function trainable for one ``--trials qat`` trial (:mod:`autocomp.trials`).

    Args:
        config: Tune's sample: ``policy`` (a policy id of ``policies``), and any ``qat`` option
            the sampler picked (M > 1 trials per policy), which overrides ``options``.
        spec: the ``--model`` string (remapped for cluster workers).
        policies: policy id -> ``Policy.to_dict()``.
        options: the fixed ``qat`` evaluator options.
        placement: ``device`` (``cpu`` or ``cuda``: the controller resolved it and asked Tune for
            the GPU share) and ``eval_dtype`` (the scoring's autocast dtype); not trial options.

    Reports the quality under the metric's name, the options the trial ran with (not its
    placement), and the :class:`~autocomp.metrics.Metrics`, whose extras say where it ran
    (``device``, ``eval_dtype``, and ``resources``: the Ray resources it held; the controller adds
    the costs and stores it).
    """
    import torch
    from ray import tune

    from autocomp.evaluators import get_evaluator
    from autocomp.workers.runtime_env import worker_spec
    from autocomp.workload import load_workload

    torch.set_num_threads(1)   # the trial holds one CPU
    opts = {**(options or {}), **{k: v for k, v in config.items() if k != "policy"}}
    place = {"device": "cpu", "eval_dtype": "float32", **(placement or {})}
    pol = Policy.from_dict((policies or {})[config["policy"]])
    wl = load_workload(worker_spec(spec))
    res = get_evaluator("qat", **opts, **place).evaluate(wl, pol)
    res = dataclasses.replace(res, extras={**res.extras, **place, "resources": _held()})
    tune.report({res.quality_metric: res.quality, "options": opts, "evaluation": res.to_dict()})


def _held() -> dict[str, float]:
    """The Ray resources this trial holds (``CPU``, and ``GPU`` when it asked for a share)."""
    import ray

    if not ray.is_initialized():
        return {}
    held = ray.get_runtime_context().get_assigned_resources()
    return {k: float(v) for k, v in sorted(held.items()) if k in ("CPU", "GPU")}
