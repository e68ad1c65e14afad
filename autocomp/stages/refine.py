"""Stage ``refine``: Optuna refinement after the sweep. Cheap evaluators (PTQ) run batch by batch
on the warm actor pool (:mod:`autocomp.refine`); evaluators that train (QAT) run as Ray Tune
trials (:mod:`autocomp.refine_qat`). Both resume: re-running with the same ``n`` does nothing.

Example:
    >>> res = refine(store, study, ctx, n=40, evaluator="ptq", workers=2)   # doctest: +SKIP
    >>> res.evaluated                                                        # doctest: +SKIP
    40
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from autocomp.errors import AutocompError
from autocomp.evaluators import evaluator_class
from autocomp.stages.context import StudyContext
from autocomp.stages.status import IncompleteRun
from autocomp.store import Store
from autocomp.store.repository import StudyInfo


def check_refine(n: int, evaluator: str, sampler: str) -> None:
    """Validate refinement options before anything runs."""
    from autocomp.refine import SAMPLERS

    if n < 0:
        raise AutocompError("--refine must be 0 or more")
    try:
        evaluator_class(evaluator)
    except AutocompError as e:
        raise AutocompError(f"unknown --refine-mode {evaluator!r}: {e}") from None
    if evaluator not in ("ptq", "qat"):
        # refine_qat runs the qat evaluator's Tune trainable; nas candidates are other networks
        nas = "; quantization-aware NAS runs with --trials nas" if evaluator == "nas" else ""
        raise AutocompError(f"--refine-mode {evaluator}: refinement runs ptq on the actor pool, or qat as Ray Tune "
                            f"trials{nas}")
    if sampler not in SAMPLERS:
        raise AutocompError(f"unknown --refine-sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")


def refine(store: Store, study: StudyInfo, ctx: StudyContext, n: int, evaluator: str = "ptq",
           workers: int | None = None, seed: int = 0, sampler: str = "auto",
           on_progress: Callable[[int], None] | None = None, options: Mapping[str, Any] | None = None):
    """Refine study ``study`` until it holds ``n`` refinement evaluations of ``evaluator``
    (``options``: the PTQ evaluator's, as the search's; QAT trials take their own).

    Returns:
        An :class:`autocomp.refine.RefineResult`.

    Raises:
        IncompleteRun: some refinement evaluations failed; those that landed are stored.
    """
    check_refine(n, evaluator, sampler)
    common = dict(spec=ctx.spec, layers=list(ctx.layers), space=ctx.space, budget=ctx.budget, cm=ctx.cm, n=n,
                  seed=seed, sampler=sampler, quality=ctx.quality, on_progress=on_progress)
    if evaluator_class(evaluator).trains:
        from autocomp.refine_qat import refine_qat

        res = refine_qat(store, study, **common)
    else:
        from autocomp.refine import refine as refine_ptq

        res = refine_ptq(store, study, workers=workers, options=options, **common)
    if res.failures:
        raise IncompleteRun(f"{len(res.failures)} refinement evaluation(s) failed ({res.failures[0]}); stored "
                            "results are kept")
    return res
