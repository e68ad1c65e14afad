"""Quantizers, registered by name: how a layer's weights become the codes a choice stores.

``rtn`` (round-to-nearest; the default), and error-correcting ones that use calibration
statistics of each layer's input, collected once per model (:func:`collect_stats`) and shared by
every policy a worker evaluates. ``get_quantizer(name, **options)`` builds one.

Write your own:

    >>> import torch
    >>> from autocomp.quantizers import LayerResult, Quantizer, get_quantizer, list_quantizers, register
    >>> from autocomp.modules import weight_of
    >>> @register
    ... class Zero(Quantizer):
    ...     '''Every weight zero (a toy).'''
    ...     name = "zero"
    ...     def quantize_layer(self, name, module, choice, stats):
    ...         return LayerResult(torch.zeros_like(weight_of(module)))
    >>> "zero" in list_quantizers()
    True
    >>> get_quantizer("nope")                 # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: unknown quantizer 'nope': choose from ...
"""
from __future__ import annotations

from typing import Any

from autocomp.errors import AutocompError
from autocomp.quantizers._base import (STATS, LayerResult, LayerStats, NoQuantizerOptions, Quantizer,
                                       add_bias, collect_stats, input_rows)
from autocomp.registry import Registry

__all__ = ["STATS", "LayerResult", "LayerStats", "NoQuantizerOptions", "Quantizer", "add_bias",
           "collect_stats", "get_quantizer", "input_rows", "list_quantizers", "quantizer_class", "register"]

_REGISTRY: Registry[type[Quantizer]] = Registry("quantizer", {
    "rtn": "autocomp.quantizers.rtn:RTNQuantizer",
    "absmax": "autocomp.quantizers.absmax:AbsmaxQuantizer",
    "gptq": "autocomp.quantizers.gptq:GPTQQuantizer",
    "awq": "autocomp.quantizers.awq:AWQQuantizer",
    "bias_correction": "autocomp.quantizers.bias_correction:BiasCorrection",
    "adaround": "autocomp.quantizers.adaround:AdaRoundQuantizer",
    "per_layer": "autocomp.quantizers.per_layer:PerLayerQuantizer",   # each layer its choice's quantizer
})


def register(cls: type[Quantizer]) -> type[Quantizer]:
    """Register ``cls`` under ``cls.name``; usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Quantizer)) or not cls.name:
        raise AutocompError(f"register: {cls!r} is not a Quantizer subclass with a name")
    _REGISTRY.register(cls.name, cls)
    return cls


def list_quantizers() -> list[str]:
    return _REGISTRY.names()


def quantizer_class(name: str) -> type[Quantizer]:
    return _REGISTRY.get(name)


def get_quantizer(name: str, **options: Any) -> Quantizer:
    """The quantizer registered as ``name``, built with ``options``; ``name`` may also be a
    composed spec such as ``awq(clip=False)+bias_correction`` (see :mod:`.compose`)."""
    if "+" in name or "(" in name:
        from autocomp.quantizers.compose import build

        return build(name, **options)
    return quantizer_class(name)(**options)
