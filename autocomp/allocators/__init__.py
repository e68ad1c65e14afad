"""Allocators turn sensitivities into policies under a budget.

Example:
    >>> from autocomp.allocators import get_allocator
    >>> get_allocator("ilp").name
    'ilp'
"""
from __future__ import annotations

from autocomp.allocators._base import Allocation, Allocator, get_allocator, list_allocators, register

__all__ = ["Allocation", "Allocator", "get_allocator", "list_allocators", "register"]
