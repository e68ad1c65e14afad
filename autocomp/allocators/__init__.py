"""Allocators turn sensitivities into policies under a budget.

``ilp`` (HiGHS in process when highspy is installed, else CBC through PuLP) takes any mix of
constraints; ``dp`` solves one constraint exactly by dynamic programming. Both share the
contract of :class:`Allocator` (``solve``, ``sweep`` on :class:`~autocomp.budget.Limits`, a
budget resolved once; every answer re-verified; :func:`check_feasible` is the one feasibility
check, also run by the pipeline before it stores anything).
:mod:`autocomp.allocators.layer_prune` allocates pruning ratios alone by output distortion.

Example:
    >>> from autocomp.allocators import get_allocator
    >>> get_allocator("ilp").name, get_allocator("dp").name
    ('ilp', 'dp')
"""
from __future__ import annotations

from autocomp.allocators._base import (Allocation, Allocator, RawSolution, check_feasible, get_allocator,
                                       list_allocators, register)
from autocomp.allocators._problem import Problem

__all__ = ["Allocation", "Allocator", "Problem", "RawSolution", "check_feasible", "get_allocator", "list_allocators",
           "register"]
