"""A small digits study for the QAT trials tests, built in-process without a sweep: the profile,
two searched policies and one uniform baseline, each with its real PTQ evaluation.

The searched policies: ``mixed`` (8-bit first layer, 4-bit rest; best quality) and ``w2`` (2-bit
weights: collapses under PTQ, which one QAT epoch largely restores; the cheapest). Both are on
the PTQ front, ``mixed`` first by quality.
"""
from __future__ import annotations

import dataclasses

from autocomp.budget import parse_budget
from autocomp.evaluators import get_evaluator
from autocomp.policy import Choice, Policy
from autocomp.search_spaces import load_space
from autocomp.stages import profile, record_profile
from autocomp.store import Store


def make_study(store: Store, name: str, workload, spec: str | None = None):
    """``(study, ctx, {label: policy})``; ``spec``: the model spec the trials load (default: digits)."""
    budget = parse_budget("size<=25%")
    ctx = profile(workload, budget, load_space("mixed_precision"))
    if spec is not None:
        ctx = dataclasses.replace(ctx, spec=spec)
    st, _ = store.open_study(name, {"model": ctx.spec, **ctx.stored_config()})
    record_profile(store, st, ctx)
    names = ctx.names
    pols = {"mixed": Policy.from_choices([(n, Choice(8 if i == 0 else 4, 8, 0.0)) for i, n in enumerate(names)]),
            "w2": Policy.uniform(names, Choice(2, 8, 0.0)),
            "u8": Policy.uniform(names, Choice(8, 8, 0.0))}
    ptq = get_evaluator("ptq")
    for label, pol in pols.items():
        store.save_policy(st, pol, "uniform" if label == "u8" else "ilp", label, ctx.cm.costs(pol))
        store.save_evaluation(st, ptq.evaluate(workload, pol).with_costs(ctx.cm.costs(pol)))
    return store.get_study(name), ctx, pols
