"""The pipeline as plain functions, one module per stage, each over values and the
:class:`~autocomp.store.Store` and each runnable alone from what a study holds:

=============  ==============================================================================
profile        :func:`profile` a workload into a :class:`StudyContext` (layers, space, budget
               resolved once, cost model); :func:`record_profile` stores it
score          :func:`score` a proxy's sensitivity on Ray, or read it back
allocate       :func:`plan_candidates` (sweep + baselines), :func:`save_candidates`
evaluate       :func:`evaluate` what is missing on a warm evaluator pool
refine         :func:`refine` with Optuna (actor batches, or Ray Tune trials for training)
trials         ``stages.trials.run_trials``: QAT trials of the best PTQ-front policies, NAS trials
target         :func:`seek_target`: the cheapest policy meeting a quality target, by bisection
validate       :func:`validate_study` on low-bit kernels
status         :func:`tracked`: ``running`` inside, ``done``/``incomplete``/``interrupted``/``failed`` after
=============  ==============================================================================

:func:`autocomp.search.run_search` composes them; :func:`load_context` rebuilds a stored study's
context, so e.g. re-evaluating a study with another evaluator is four lines:

Example:
    >>> from autocomp.stages import evaluate, load_context              # doctest: +SKIP
    >>> study = store.get_study("first")                                # doctest: +SKIP
    >>> ctx = load_context(store, study)                                 # doctest: +SKIP
    >>> evaluate(store, study, ctx.spec, ctx.cm, evaluator="qat")       # doctest: +SKIP
"""
from __future__ import annotations

from autocomp.stages.allocate import DEFAULT_BASELINES, Candidate, baselines, plan_candidates, save_candidates
from autocomp.stages.context import StudyContext, load_context, make_context
from autocomp.stages.evaluate import EvaluateResult, evaluate, pending
from autocomp.stages.profile import check_profile, profile, record_profile, stored_accounting
from autocomp.stages.refine import check_refine, refine
from autocomp.stages.score import check_data, covers, score, score_key
from autocomp.stages.status import IncompleteRun, tracked
from autocomp.stages.target import TargetResult, seek_target

__all__ = ["DEFAULT_BASELINES", "Candidate", "EvaluateResult", "IncompleteRun", "StudyContext", "baselines",
           "check_data", "check_profile", "stored_accounting", "check_refine", "covers", "evaluate", "load_context", "make_context",
           "pending", "plan_candidates", "profile", "record_profile", "refine", "save_candidates", "score",
           "score_key", "seek_target", "TargetResult", "tracked"]
