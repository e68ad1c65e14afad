"""Stage ``allocate``: the allocator's sweep over the budget, mixed precision at the cost of each
uniform baseline (HAWQ's comparison), and the baselines themselves, stored as candidate policies.

Example:
    >>> cands = plan_candidates(ctx, sens, "ilp", points=12)    # doctest: +SKIP
    >>> save_candidates(store, study, ctx, cands)               # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from autocomp.allocators import Allocation, get_allocator
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.policy import Choice, Policy
from autocomp.sensitivity import Sensitivity
from autocomp.stages.context import StudyContext
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

DEFAULT_BASELINES = (8, 6, 4, 3, 2)


@dataclass(frozen=True)
class Candidate:
    """A policy to evaluate, with where it came from."""

    policy: Policy
    source: str                      # the allocator's name, uniform, fp32, optuna ...
    label: str
    info: dict[str, Any] = field(default_factory=dict)


def uniform_policy(ctx: StudyContext, bits: float) -> Policy | None:
    """Every layer at ``bits`` with the rest of its choice taken from the space
    (:meth:`SearchSpace.uniform_choice`): ``w{b}a8`` for the 8-bit-activation spaces,
    ``w{b}a32g128`` for ``weight_only``, float inputs for embeddings and heads. None when the
    space lists its choices and none has ``bits``."""
    choices = [(l.name, ctx.space.uniform_choice(l, bits)) for l in ctx.layers]
    if any(c is None for _, c in choices):
        return None
    return Policy.from_choices(choices)


def embeddings_at_8(ctx: StudyContext, bits: float) -> Policy | None:
    """The uniform ``bits`` policy with embeddings and LM heads at the space's 8-bit choice: what
    LLM weight compressors do by default at 4 bits and below (NNCF's ``compress_weights`` keeps
    them at INT8). None when the model has no such layer, ``bits`` is above 4, or the space has no
    8-bit choice."""
    base = uniform_policy(ctx, bits)
    if base is None or bits > 4 or not any(l.weight_only for l in ctx.layers):
        return None
    ch = base.as_dict()
    for l in ctx.layers:
        if l.weight_only:
            c8 = ctx.space.uniform_choice(l, 8)
            if c8 is None:
                return None
            ch[l.name] = c8
    return Policy.from_choices([(n, ch[n]) for n in ctx.names])


def baselines(ctx: StudyContext, bits: Sequence[int] = DEFAULT_BASELINES) -> list[Candidate]:
    """Uniform policies at each of ``bits`` (following the space, see :func:`uniform_policy`),
    for transformers also with embeddings and heads at 8 bits (:func:`embeddings_at_8`), and the
    fp32 model."""
    out = []
    for b in bits:
        pol = uniform_policy(ctx, b)
        if pol is not None:
            out.append(Candidate(pol, "uniform", f"uniform {_label(pol)}"))
        mix = embeddings_at_8(ctx, b)
        if mix is not None and mix != pol:
            out.append(Candidate(mix, "uniform", f"uniform {_label(mix)}, embeddings 8-bit"))
    out.append(Candidate(Policy.uniform(ctx.names, Choice(32, 32, 0.0)), "fp32", "fp32"))
    return out


def _label(policy: Policy) -> str:
    # The most common choice names the baseline (embeddings may differ in their float input).
    keys = [c.key for _, c in policy.layers]
    return max(dict.fromkeys(keys), key=keys.count) if keys else "empty"


def _candidate(a: Allocation, allocator: str, label: str) -> Candidate:
    return Candidate(a.policy, allocator, label,
                     {"objective": a.objective, "status": a.status, "budget": a.budget.to_dict()})


def plan_candidates(ctx: StudyContext, sens: Sensitivity, allocator: str = "ilp", points: int = 12,
                    baseline_bits: Sequence[int] = DEFAULT_BASELINES, on_progress=None,
                    pairwise=None) -> list[Candidate]:
    """Baselines first, then the sweep, then the allocator at each baseline's cost; writes nothing.

    A searched policy equal to a baseline is stored once, as the baseline. ``pairwise``: measured
    interaction terms for the allocator (:meth:`autocomp.interactions.Interactions.pairwise`).
    """
    if points < 1:
        raise AutocompError("--points must be at least 1")
    alloc = get_allocator(allocator)
    cm, limits = ctx.cm, ctx.limits
    out = baselines(ctx, baseline_bits)
    for a in alloc.sweep(list(ctx.layers), sens, ctx.space, limits, cm, points=points, pairwise=pairwise):
        p = a.limits.primary
        out.append(_candidate(a, allocator, f"{allocator} {p.metric}<={cm.format(p.metric, p.bound)}"))
    if on_progress is not None:
        on_progress(points)
    primary = limits.primary.metric
    for b in baseline_bits:
        pol = uniform_policy(ctx, b)
        if pol is None:
            continue
        cost = cm.cost(primary, pol)
        if cost > limits[primary] * (1 + 1e-9):
            continue
        try:
            a = alloc.solve(list(ctx.layers), sens, ctx.space, limits.with_limit(primary, cost), cm, pairwise=pairwise)
        except InfeasibleBudget:
            continue
        out.append(_candidate(a, allocator, f"{allocator} @uniform-{b}bit {primary}"))
    return out


def save_candidates(store: Store, study: StudyInfo, ctx: StudyContext, candidates: Sequence[Candidate]) -> list[Policy]:
    """Store each distinct candidate once, with its costs; returns the distinct policies in order."""
    seen: set[str] = set()
    out = []
    for c in candidates:
        if c.policy.id in seen:
            continue
        seen.add(c.policy.id)
        store.save_policy(study, c.policy, c.source, c.label, ctx.cm.costs(c.policy), c.info)
        out.append(c.policy)
    return out
