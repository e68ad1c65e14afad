"""The NAS Ray Tune trainable: what runs on the worker for one quantization-aware NAS trial.

The trial turns Tune's sample into an architecture and its per-block bits, builds and profiles
the candidate (a builder that rejects the architecture fails the trial, with its reason), prices
its policy with a cost model over the candidate's own layers, trains it under quantization noise
(the ``nas`` evaluator) reporting the fake-quantized accuracy every ``report_every`` steps (what
ASHA stops trials on), and reports the PTQ score last. Every report carries the policy and its
costs, so a trial stopped early is stored too. Nothing here writes to the study database: the
controller (:mod:`autocomp.refine_nas`) does.

Example:
    >>> from ray import tune
    >>> trainable = tune.with_parameters(nas_trainable, spec="digits", space_def=space.to_dict())   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Sequence


def nas_trainable(config: dict, spec: str = "digits", space_def: dict | None = None, options: dict | None = None,
                  metrics: Sequence[str] = ("size",), full_size: bool = True) -> None:
    """Ray Tune function trainable for one NAS trial.

    Args:
        config: Tune's sample: ``depth``, whole-model settings, ``b<i>.<setting>`` and ``b<i>.bits``.
        spec: the ``--model`` string (remapped for cluster workers).
        space_def: the NAS search space (``SearchSpace.to_dict``, with its ``nas:`` section).
        options: the ``nas`` evaluator's options.
        metrics: the cost metrics reported as Optuna objectives.
        full_size: whether ``size`` counts the checkpoint file (as the study does).
    """
    import torch
    from ray import tune

    from autocomp.evaluators import get_evaluator
    from autocomp.nas_models import arch_from_config, candidate_costs, candidate_policy, profile_candidate
    from autocomp.search_spaces import space_from_dict
    from autocomp.workers.runtime_env import worker_spec
    from autocomp.workload import load_workload

    torch.set_num_threads(1)   # the trial holds one CPU
    space = space_from_dict(space_def or {})
    arch = arch_from_config(config, space.nas)
    opts = dict(options or {})
    model, layers = profile_candidate(arch, opts.get("seed", 0))
    pol = candidate_policy(arch, layers, [config[f"b{i}.bits"] for i in range(arch.depth)], space)
    costs = candidate_costs(model, layers, pol, full_size)
    wl = load_workload(worker_spec(spec))
    common = {"policy": pol.to_dict(), "costs": costs, **{m: costs[m] for m in metrics}}

    def on_report(step: int, quality: float) -> None:
        tune.report({wl.quality: quality, "step": step, **common})

    res = get_evaluator("nas", **opts).run(wl, pol, on_report)
    tune.report({wl.quality: res.quality, "step": opts.get("steps", 0), **common, "evaluation": res.to_dict()})
