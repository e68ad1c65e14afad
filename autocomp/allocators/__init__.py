"""Allocators turn sensitivities into policies under a budget.

``ilp`` (HiGHS in process when highspy is installed, else CBC through PuLP) takes any mix of
constraints; ``dp`` solves one constraint exactly by dynamic programming. Both share the
contract of :class:`Allocator` (``solve``, ``sweep``; every answer re-verified).
:mod:`autocomp.allocators.layer_prune` allocates pruning ratios alone by output distortion.

Example:
    >>> from autocomp.allocators import get_allocator
    >>> get_allocator("ilp").name, get_allocator("dp").name
    ('ilp', 'dp')
"""
from __future__ import annotations

from autocomp.allocators._base import Allocation, Allocator, get_allocator, list_allocators, register

__all__ = ["Allocation", "Allocator", "get_allocator", "list_allocators", "register"]
