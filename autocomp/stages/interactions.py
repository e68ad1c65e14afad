"""Stage ``interactions``: measure the pairwise terms of the layers that matter, once per study.

The plan (:func:`autocomp.interactions.plan_pairs`: the ``k`` most sensitive layers by the
study's sensitivity, their pairs and execution-order neighbours, each layer's ``per_layer`` most
aggressive choices) becomes probe policies - the float model, each layer alone compressed, each
pair compressed together, everything else float, as the additive sensitivity's reference is -
evaluated with the search's evaluator on the warm actor pool. Each probe's result is stored as it
lands (evaluation kind ``interaction``, so probes never enter the front) and the assembled
:class:`~autocomp.interactions.Interactions` is stored in ``autocomp_interactions``: a re-run
reads it back, an interrupted run evaluates only the missing probes.

Example:
    >>> it = measure_interactions(store, study, ctx, sens, k=3, workers=2)   # doctest: +SKIP
    >>> alloc.sweep(layers, sens, space, limits, cm, pairwise=it.pairwise(sens))   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from autocomp.errors import AutocompError
from autocomp.interactions import Interactions, PairPlan, interactions_key, plan_pairs, probe
from autocomp.policy import FLOAT_CHOICE, Policy
from autocomp.sensitivity import Sensitivity
from autocomp.stages.context import StudyContext
from autocomp.stages.evaluate import evaluate, pending
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

KIND = "interaction"


def check_interactions(k: int, per_layer: int = 2) -> None:
    """One-line errors for bad options (before anything is written)."""
    if not isinstance(k, int) or k < 0:
        raise AutocompError(f"--interactions must be a number of layers, 0 or more (got {k!r})")
    if per_layer < 1:
        raise AutocompError("interactions need at least one measured choice per layer")


def plan(ctx: StudyContext, sens: Sensitivity, k: int, per_layer: int = 2) -> PairPlan:
    """What :func:`measure_interactions` measures for this study (writes nothing)."""
    layers = list(ctx.layers)
    return plan_pairs(layers, sens, ctx.space.choices(layers), ctx.space.tie_groups(layers), k, per_layer)


def probes(ctx: StudyContext, p: PairPlan) -> list[Policy]:
    """The float reference, then every single, then every pair of ``p``, as policies."""
    names = ctx.names
    out = [Policy.uniform(names, FLOAT_CHOICE)]
    out += [probe(names, {n: c}) for n, cs in p.choices.items() for c in cs]
    out += [probe(names, {a: ca, b: cb}) for (a, b), cps in p.pairs.items() for ca, cb in cps]
    return out


def pending_probes(store: Store, study: StudyInfo, ctx: StudyContext, sens: Sensitivity, k: int,
                   per_layer: int = 2) -> int:
    """Probes still to evaluate (0 when the interactions are stored; for a progress bar)."""
    if store.load_interactions(study, interactions_key(sens.proxy, k, per_layer)) is not None:
        return 0
    return len(pending(store, study, probes(ctx, plan(ctx, sens, k, per_layer)), KIND))


def measure_interactions(store: Store, study: StudyInfo, ctx: StudyContext, sens: Sensitivity, k: int,
                         per_layer: int = 2, evaluator: str = "ptq", workers: int | None = None,
                         pool: Any = None, on_progress: Callable[[int], None] | None = None,
                         options: Mapping[str, Any] | None = None) -> Interactions:
    """The stored interactions of ``sens`` for ``k`` and ``per_layer``, else measure and store them
    (``options``: the evaluator's, as the search's own evaluations use them).

    Raises:
        IncompleteRun: some probes failed; those that landed are stored (a re-run resumes).
    """
    check_interactions(k, per_layer)
    key = interactions_key(sens.proxy, k, per_layer)
    stored = store.load_interactions(study, key)
    if stored is not None:
        return stored
    p = plan(ctx, sens, k, per_layer)
    pols = probes(ctx, p)
    evaluate(store, study, ctx.spec, ctx.cm, pols, evaluator, options, workers=workers, on_progress=on_progress,
             kind=KIND, pool=pool)
    quality = {e.policy_id: e.quality for e in store.list_evaluations(study, kind=KIND)}
    names = ctx.names
    singles = {n: {c.key: quality[probe(names, {n: c}).id] for c in cs} for n, cs in p.choices.items()}
    pairs = {(a, b): {(ca.key, cb.key): quality[probe(names, {a: ca, b: cb}).id] for ca, cb in cps}
             for (a, b), cps in p.pairs.items()}
    it = Interactions(sens.proxy, k, per_layer, ctx.quality, quality[pols[0].id], singles, pairs)
    store.save_interactions(study, it)
    return it
