"""What the contract suites run on: a workload and its profiled layers, loaded once per process.

Every contract class of a test session shares one workload object per spec (``digits`` trains
once, ~20 s, then loads from ``~/.cache/autocomp`` in ~2 s).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autocomp.profile import LayerInfo
    from autocomp.workload import Workload


@lru_cache(maxsize=None)
def workload(spec: str = "digits") -> "Workload":
    """The workload ``spec`` names (as ``--model`` does), its model built.

    Example:
        >>> workload("digits").name                     # doctest: +SKIP
        'digits'
    """
    from autocomp.workload import load_workload

    wl = load_workload(spec)
    wl.model()
    return wl


@lru_cache(maxsize=None)
def layers(spec: str = "digits") -> tuple["LayerInfo", ...]:
    """The quantizable layers of ``workload(spec)``'s model, profiled once."""
    from autocomp.profile import profile_model

    wl = workload(spec)
    return tuple(profile_model(wl.model(), wl.sample_input()))
