"""Stage ``trials``: training trials after the sweep (``autocomp search --trials qat|nas``).

``qat``: the best ``top`` policies of the PTQ front fine-tuned by the ``qat`` evaluator as Ray
Tune trials (:mod:`autocomp.trials`); ``nas``: quantization-aware architecture trials
(:func:`autocomp.refine_nas.refine_nas`). Both resume: trials the study holds are not run again.

Example:
    >>> spec = TrialsSpec("qat", top=2, qat="epochs=1")                # doctest: +SKIP
    >>> check_trials(spec); run_trials(store, study, ctx, spec).evaluated   # doctest: +SKIP
    2
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from autocomp.errors import AutocompError
from autocomp.stages.context import StudyContext
from autocomp.stages.status import IncompleteRun
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

TRIALS = ("qat", "nas")


@dataclass(frozen=True)
class TrialsSpec:
    """What ``--trials`` asks for (the CLI options of the same names)."""

    trials: str | None = None     # qat | nas | None
    top: int = 3                  # qat: the best K policies of the PTQ front
    qat: str = ""                 # qat: the evaluator's options, 'key=value,...'
    per_policy: int = 1           # qat: trials per policy (M > 1: Optuna samples estimator, its parameters, lr)
    steps: int | None = None      # the step budget of each trial (qat: its ``steps`` option)
    nas_samples: int = 0          # nas: the NAS trials the study should hold
    retries: int = 1              # Tune's max_failures: reruns of a trial that raised
    seed: int = 0


def check_trials(spec: TrialsSpec, model: str | None = None) -> dict[str, Any]:
    """Validate ``spec`` (for the ``--model`` spec ``model``) before anything runs; returns the
    QAT trials' fixed options ({} for nas).

    Raises:
        AutocompError: one line: an unknown ``--trials``, an option of the other kind, a bad
            ``--qat`` option or value (the ``qat`` evaluator's own check), ``--trials nas``
            without the NAS module.
    """
    from autocomp.trial_options import parse_options, qat_options

    qat_only = {"--top": spec.top != 3, "--qat": bool(spec.qat), "--trials-per-policy": spec.per_policy != 1}
    if spec.trials is None:
        given = [k for k, v in {**qat_only, "--trial-steps": spec.steps is not None,
                                "--nas-samples": spec.nas_samples != 0, "--trial-retries": spec.retries != 1}.items() if v]
        if given:
            raise AutocompError(f"{given[0]} applies only with --trials qat or --trials nas")
        return {}
    if spec.trials not in TRIALS:
        raise AutocompError(f"unknown --trials {spec.trials!r}: use qat or nas")
    if spec.retries < 0:
        raise AutocompError("--trial-retries must be 0 or more")
    if spec.steps is not None and spec.steps < 1:
        raise AutocompError("--trial-steps must be at least 1")
    if spec.trials == "nas":
        bad = [k for k, v in qat_only.items() if v]
        if bad:
            raise AutocompError(f"{bad[0]} applies to --trials qat, not nas")
        if spec.nas_samples < 1:
            raise AutocompError("--trials nas needs --nas-samples N (the NAS trials the study should hold), N >= 1")
        if importlib.util.find_spec("autocomp.refine_nas") is None:
            raise AutocompError("--trials nas: this autocomp has no NAS controller (autocomp.refine_nas)")
        if model is not None:
            from autocomp.nas_models import check_nas

            check_nas(model)   # the workload has an architecture builder
        return {}
    if spec.nas_samples:
        raise AutocompError("--nas-samples applies to --trials nas, not qat")
    if spec.top < 1:
        raise AutocompError("--top must be at least 1")
    if spec.per_policy < 1:
        raise AutocompError("--trials-per-policy must be at least 1")
    return qat_options(parse_options(spec.qat), spec.steps, spec.seed)


def pending_count(store: Store, study: StudyInfo, spec: TrialsSpec) -> int:
    """Trials a :func:`run_trials` call would run now (a progress bar's length; NAS: the target)."""
    if spec.trials == "nas":
        return spec.nas_samples
    from autocomp.trials import pending_trials, top_policies

    return sum(pending_trials(store, study, top_policies(store, study, spec.top), check_trials(spec),
                              spec.per_policy).values())


def run_trials(store: Store, study: StudyInfo, ctx: StudyContext, spec: TrialsSpec, workers: int | None = None,
               on_progress: Callable[[int], None] | None = None, device: str = "cpu", eval_dtype: str = "float32"):
    """Run the trials ``spec`` asks for that the study does not hold yet.

    ``device`` (``cpu``, ``cuda``, ``auto``) and ``eval_dtype``: where the trials train and the
    autocast dtype they score in (``--device``, ``--eval-dtype``); on CUDA each trial asks Tune
    for a share of the cluster's GPUs. They do not name the trials: a resumed run on another
    device runs no stored trial again.

    Returns:
        An :class:`autocomp.refine.RefineResult`.

    Raises:
        IncompleteRun: some trials failed after their retries; the others are stored, and a
            re-run retries only the failed ones.
    """
    options = check_trials(spec)
    if spec.trials == "nas":
        from autocomp.refine_nas import refine_nas

        steps = {} if spec.steps is None else {"steps": spec.steps}
        res = refine_nas(store, study, ctx, spec.nas_samples, seed=spec.seed, on_progress=on_progress,
                         max_concurrent=workers, max_failures=spec.retries, **steps)
    else:
        from autocomp.trials import qat_trials

        res = qat_trials(store, study, ctx, spec.top, options, per_policy=spec.per_policy, seed=spec.seed,
                         retries=spec.retries, on_progress=on_progress, max_concurrent=workers,
                         device=device, eval_dtype=eval_dtype)
    if res.failures:
        raise IncompleteRun(f"{len(res.failures)} {spec.trials.upper()} trial(s) failed after "
                            f"{spec.retries + 1} attempt(s) ({res.failures[0]}); stored results are kept")
    return res
