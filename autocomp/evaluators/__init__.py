"""Evaluators, registered by name: ``ptq`` (post-training quantization), ``qat`` (STE fine-tune),
``nas`` (a NAS candidate trained under quantization noise, then PTQ-scored).

``get_evaluator(name, **options)`` builds one; a name of the form ``package.module:Class`` or
``path/to/file.py:Class`` imports that module first (which may register it), so an evaluator of
your own reaches Ray workers by that spec: :class:`autocomp.workers.pool.EvaluatorPool` passes
the name to each actor, and the actor resolves it there.

Write your own, and run the contract suite on it (subclass
:class:`autocomp.testing.EvaluatorContract` with ``evaluator = "yours"``):

    >>> from autocomp.evaluators import Evaluator, get_evaluator, list_evaluators, register
    >>> from autocomp.metrics import Metrics
    >>> @register
    ... class Sparsity(Evaluator):
    ...     '''Quality = the fraction of layers left unpruned (a toy).'''
    ...     name = "sparsity"
    ...     def evaluate(self, workload, policy):
    ...         kept = sum(c.prune == 0 for _, c in policy.layers) / len(policy.layers)
    ...         return Metrics(policy.id, kept, workload.quality, seconds=0.0)
    >>> "sparsity" in list_evaluators()
    True
    >>> type(get_evaluator("sparsity")).__name__
    'Sparsity'
    >>> get_evaluator("nope")                # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: unknown evaluator 'nope': choose from nas, ptq, qat, ..., or give package.module:Class
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from autocomp.errors import AutocompError
from autocomp.evaluators._base import DeviceOptions, Evaluator, NoOptions
from autocomp.registry import Registry

__all__ = ["DeviceOptions", "Evaluator", "NoOptions", "evaluator_class", "get_evaluator", "list_evaluators", "register"]

# Built-ins are imported when first asked for: listing evaluators costs no torch import.
_REGISTRY: Registry[type[Evaluator]] = Registry("evaluator", {
    "ptq": "autocomp.evaluators.ptq:PTQEvaluator",
    "qat": "autocomp.evaluators.qat:QATEvaluator",
    "nas": "autocomp.evaluators.nas:NASEvaluator",
})


def register(cls: type[Evaluator]) -> type[Evaluator]:
    """Register ``cls`` under ``cls.name`` (replacing one of that name); usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Evaluator)) or not cls.name:
        raise AutocompError(f"register: {cls!r} is not an Evaluator subclass with a name")
    _REGISTRY.register(cls.name, cls)
    return cls


def list_evaluators() -> list[str]:
    return _REGISTRY.names()


def evaluator_class(name: str) -> type[Evaluator]:
    """The class registered as ``name``, or named by a ``module:Class`` / ``file.py:Class`` spec."""
    if name in _REGISTRY:
        return _REGISTRY.get(name)
    if ":" in name:
        return _load(name)
    raise AutocompError(f"unknown evaluator {name!r}: choose from {', '.join(list_evaluators())}, "
                        "or give package.module:Class")


def get_evaluator(name: str, **options: Any) -> Evaluator:
    """Build evaluator ``name`` with ``options`` (its ``Options`` fields).

    Raises:
        AutocompError: an unknown name, an unloadable spec, or a bad option (one line each).
    """
    return evaluator_class(name)(**options)


def _load(name: str) -> type[Evaluator]:
    mod_part, _, attr = name.rpartition(":")
    try:
        module = _load_module(mod_part)
    except Exception as e:  # noqa: BLE001 - the user's module failed to import: say so in one line
        raise AutocompError(f"evaluator {name!r}: cannot import {mod_part!r} ({type(e).__name__}: {e})") from e
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
        raise AutocompError(f"evaluator {name!r}: {mod_part!r} has no Evaluator subclass {attr!r}")
    return cls


def _load_module(mod_part: str) -> Any:
    if not (mod_part.endswith(".py") or "/" in mod_part):
        return importlib.import_module(mod_part)
    path = Path(mod_part).expanduser().resolve()
    # One module per file, however it is spelled: importing it twice would register it twice.
    key = f"autocomp_evaluator_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    if key not in sys.modules:
        if not path.is_file():
            raise FileNotFoundError(f"no such file {str(path)!r}")
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
