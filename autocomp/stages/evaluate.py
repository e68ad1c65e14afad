"""Stage ``evaluate``: every stored policy without an evaluation of this kind, on a warm pool of
Ray actors hosting the chosen evaluator; each result is stored as it lands (a crash loses only
what was in flight), and a re-run evaluates only what is missing.

Example:
    >>> done = evaluate(store, study, ctx.spec, ctx.cm, policies, evaluator="ptq", workers=2)   # doctest: +SKIP
    >>> done.evaluated, done.skipped                                                # doctest: +SKIP
    (20, 0)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from autocomp.metrics import Metrics
from autocomp.policy import Policy
from autocomp.budget import CostModel
from autocomp.stages.status import IncompleteRun
from autocomp.store import Store
from autocomp.store.repository import StudyInfo


@dataclass
class EvaluateResult:
    evaluated: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def pending(store: Store, study: StudyInfo, policies: Sequence[Policy], kind: str = "ptq") -> list[Policy]:
    """The policies of ``policies`` the study holds no ``kind`` evaluation of."""
    done = store.evaluated_ids(study, kind=kind)
    return [p for p in policies if p.id not in done]


def evaluate(store: Store, study: StudyInfo, spec: str, cm: CostModel, policies: Sequence[Policy] | None = None,
             evaluator: str = "ptq", options: Mapping[str, Any] | None = None, workers: int | None = None,
             on_progress: Callable[[int], None] | None = None, kind: str | None = None,
             pool: Any = None) -> EvaluateResult:
    """Evaluate what is missing and store it (kind: the evaluator's name unless given; the store
    files kind ``ptq`` under the study's quantizer, ``ptq:<spec>``, see
    :func:`~autocomp.store.repository.ptq_kind`).

    Args:
        spec: the workload's ``--model`` string (each actor loads it once).
        cm: the cost model whose costs are stored beside each result.
        policies: the policies to cover (default: every policy the study stores).
        options: the evaluator's options (``ptq``: device, eval_dtype, quantizer).
        pool: an open :class:`~autocomp.workers.pool.EvaluatorPool` to reuse across calls (a
            caller evaluating in rounds keeps its actors warm); default: one for this call.

    Raises:
        IncompleteRun: some evaluations failed; those that landed are stored.
    """
    from autocomp.salient import evaluation_costs
    from autocomp.stages.status import check_signals
    from autocomp.workers.pool import EvaluatorPool

    kind = kind or evaluator
    if policies is None:
        policies = [Policy.from_dict(p.policy) for p in store.list_policies(study)]
    todo = pending(store, study, policies, kind)
    result = EvaluateResult(skipped=len(policies) - len(todo))
    if on_progress is None:
        on_progress = lambda n=1: None  # noqa: E731 - a no-op tick
    by_id = {p.id: p for p in todo}

    def on_result(m: Metrics) -> None:
        # a qat evaluation keeping salient weights is stored at its true cost (autocomp.salient)
        costs = evaluation_costs(cm, by_id[m.policy_id], options if evaluator == "qat" else None)
        store.save_evaluation(study, m.with_costs(costs), kind=kind)
        result.evaluated += 1
        on_progress(1)
        check_signals()   # a Ctrl-C lost inside a driver or Ray stops the sweep here

    def on_error(pid: str, e: BaseException) -> None:
        result.failures.append(f"{pid}: {type(e).__name__}")
        on_progress(1)
        check_signals()

    if todo and pool is not None:
        pool.map(todo, on_result, on_error)
    elif todo:
        with EvaluatorPool(spec, evaluator, options, workers=workers) as own:
            own.map(todo, on_result, on_error)
    if result.failures:
        raise IncompleteRun(f"{len(result.failures)} evaluation(s) failed ({result.failures[0]}); stored "
                            "results are kept")
    return result
