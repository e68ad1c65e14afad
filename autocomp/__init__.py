"""autocomp: search compression policies (mixed precision, pruning) for PyTorch models.

``autocomp.load_compressed(DIR, model_factory)`` reads a checkpoint written by
``autocomp front export --format checkpoint`` (imported on first use: ``import autocomp`` stays light).

Example:
    >>> from autocomp.policy import Choice, Policy
    >>> p = Policy.from_choices({"fc": Choice(w_bits=4, a_bits=8)})
    >>> Policy.from_dict(p.to_dict()) == p
    True
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_compressed"]


def __getattr__(name: str) -> Any:
    # The one public entry point above the values layer, re-exported for users; it is resolved
    # on first use, so importing the package imports no torch, kernels or safetensors.
    if name == "load_compressed":
        from autocomp.export.load import load_compressed

        return load_compressed
    raise AttributeError(f"module 'autocomp' has no attribute {name!r}")
