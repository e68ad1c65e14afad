"""The true costs of an evaluation that keeps PB-LLM salient weights (QAT's ``salient`` option).

A policy's costs (:class:`autocomp.budget.CostModel`) are those of its plain choices. A QAT
evaluation with ``salient > 0`` also keeps, in each 1- and 1.58-bit layer, that fraction of its
weights at 8 bits; a checkpoint of that model stores, per such layer, the 8-bit values, one fp16
scale per output channel and their positions (:func:`autocomp.layout.salient_tensors`). The
evaluation is stored at those costs, so the front places it where it really is:

- ``size``: the policy's bytes plus those tensors (with their header entries when the study
  counts checkpoint files, their data alone under the earlier accounting);
- ``avg_bits``: plus the tensors' bits per quantizable weight;
- ``bitops``: plus the salient weights' MACs at 8 bits (a layer's MACs x salient / params x 8 x
  a_bits): the sparse 8-bit part is a second product beside the binary one.

Example:
    >>> costs = evaluation_costs(cm, policy, {"salient": 0.02})         # doctest: +SKIP
    >>> costs["size"] > cm.cost("size", policy)                          # doctest: +SKIP
    True
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from autocomp.budget import CostModel
from autocomp.evaluators._binary import SALIENT_BITS
from autocomp.layout import nbytes, salient_count, salient_tensors, tensors_bytes
from autocomp.policy import FLOAT_CHOICE, Policy


def salient_extra(cm: CostModel, policy: Policy, fraction: float) -> dict[str, float]:
    """What ``fraction`` salient weights add to ``policy``'s ``size``, ``avg_bits`` and ``bitops``
    (all 0 when no layer is at 1 or 1.58 bits)."""
    digits = cm.layout.offset_digits if cm.layout is not None else None
    chosen = policy.as_dict()
    size = bits = ops = 0.0
    for layer in cm.layers:
        ch = chosen.get(layer.name, FLOAT_CHOICE)
        n = salient_count(layer, ch, fraction)
        if not n:
            continue
        tensors = salient_tensors(layer, n)
        size += tensors_bytes(layer, tensors, digits)
        bits += 8.0 * sum(nbytes(d, s) for _, d, s in tensors)
        ops += layer.macs * (n / max(int(layer.params), 1)) * SALIENT_BITS * float(ch.a_bits)
    return {"size": size, "avg_bits": bits / max(cm.qparams, 1), "bitops": ops}


def evaluation_costs(cm: CostModel, policy: Policy, options: Mapping[str, Any] | None = None,
                     metrics: Sequence[str] | None = None) -> dict[str, float]:
    """``policy``'s costs (``metrics``, default the cost model's) as an evaluation run with the
    ``qat`` evaluator ``options`` stores them: with its salient weights counted."""
    costs = cm.costs(policy, metrics)
    fraction = float((options or {}).get("salient") or 0.0)
    if fraction > 0:
        for name, extra in salient_extra(cm, policy, fraction).items():
            if name in costs:
                costs[name] += extra
    return costs
