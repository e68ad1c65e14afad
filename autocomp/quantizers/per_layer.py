"""``per_layer``: each layer quantized by the quantizer its choice names (``w4a8@gptq``).

A search space with a ``quantizer`` dimension (``quantizer: [rtn, gptq]``) gives each choice a
quantizer (:attr:`autocomp.policy.Choice.quantizer`); a choice without one uses the study's
``--quantizer`` (the ``default``). :class:`PerLayerQuantizer` dispatches each layer to its
quantizer; its :attr:`needs` is the union of theirs, so one statistics pass
(:func:`autocomp.quantizers.collect_stats`) serves every layer. :func:`for_policy` is what the
evaluator, the proxies and export call: the default quantizer itself when no choice names
another (so plain policies take exactly their historical path), else a per-layer one.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice, Policy
    >>> from autocomp.quantizers import get_quantizer
    >>> from autocomp.quantizers.per_layer import for_policy
    >>> pol = Policy.from_choices({"0": Choice(4, 32, quantizer="gptq"), "1": Choice(4, 32)})
    >>> q = for_policy(get_quantizer("rtn"), pol)
    >>> q.spec, sorted(q.needs)
    ("per_layer(quantizers=('gptq',))", ['hessian'])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.quantizers._base import STATS, LayerResult, LayerStats, Quantizer, collect_stats


@dataclass(frozen=True)
class PerLayerOptions:
    """Options of :class:`PerLayerQuantizer`.

    Attributes:
        default: spec of the quantizer of choices that name none (the study's ``--quantizer``).
        quantizers: the specs choices may name (``("rtn", "gptq")``); others are refused.
    """

    default: str = "rtn"
    quantizers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantizers", tuple(sorted(set(self.quantizers))))


class PerLayerQuantizer(Quantizer):
    """Quantize each layer with the quantizer its choice names (the default when it names none)."""

    name = "per_layer"
    Options = PerLayerOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        from autocomp.quantizers import get_quantizer

        self.default = get_quantizer(self.options.default)
        self.by_name = {q: get_quantizer(q) for q in self.options.quantizers}
        self.needs = frozenset().union(self.default.needs, *(q.needs for q in self.by_name.values()))  # type: ignore[misc]

    def quantizer_for(self, choice: Choice) -> Quantizer:
        """The quantizer that sets the weights of a layer taking ``choice``."""
        if choice.quantizer is None:
            return self.default
        if choice.quantizer not in self.by_name:
            raise AutocompError(f"choice {choice.key} names quantizer {choice.quantizer!r}, which this per-layer "
                                f"quantizer was not built with ({', '.join(self.by_name) or 'none'})")
        return self.by_name[choice.quantizer]

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:
        return self.quantizer_for(choice).quantize_layer(name, module, choice, stats)

    def finalize(self, model: torch.nn.Module, policy: Policy, batches: Iterable[Any]) -> None:
        # each quantizer's model-level pass sees the layers it quantized, the default first
        batches = list(batches)
        for q in [self.default, *self.by_name.values()]:
            mine = [(n, c) for n, c in policy.layers if self.quantizer_for(c) is q]
            if mine:
                q.finalize(model, Policy.from_choices(mine), batches)


def named_quantizers(choices: Iterable[Choice]) -> list[str]:
    """The quantizers ``choices`` name, sorted (empty when all use the default)."""
    return sorted({c.quantizer for c in choices if c.quantizer is not None})


def for_choices(default: Quantizer, choices: Iterable[Choice]) -> Quantizer:
    """``default`` when no choice names a quantizer, else a :class:`PerLayerQuantizer` over them."""
    names = named_quantizers(choices)
    if not names:
        return default
    return PerLayerQuantizer(default=default.spec, quantizers=tuple(names))


def for_policy(default: Quantizer, policy: Policy) -> Quantizer:
    """The quantizer that applies ``policy``: see :func:`for_choices`."""
    return for_choices(default, (c for _, c in policy.layers))


def ensure_stats(stats: dict[str, LayerStats], have: set[str], model: torch.nn.Module, batches: Iterable[Any],
                 names: Iterable[str], needs: Iterable[str]) -> None:
    """Add to ``stats`` (in place) the statistics in ``needs`` not yet in ``have`` (updated too):
    one more pass over the float ``model``, only when a policy names a quantizer needing more than
    what was collected, so every kind is still collected once per worker.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> st, have = {}, set()
        >>> ensure_stats(st, have, m, [(torch.ones(4, 3), None)], ["0"], ["mean"])
        >>> st["0"].mean.tolist(), sorted(have)
        ([1.0, 1.0, 1.0], ['mean'])
    """
    missing = set(needs) - have
    if not missing:
        return
    batches = list(batches)
    extra = collect_stats(model, batches, names, missing)
    for n, st in extra.items():
        cur = stats.setdefault(n, LayerStats())
        cur.rows = st.rows
        for k in STATS:
            if k in missing:
                setattr(cur, k, getattr(st, k))
    have.update(missing)

