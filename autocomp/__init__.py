"""autocomp: search compression policies (mixed precision, pruning) for PyTorch models.

Example:
    >>> from autocomp.policy import Choice, Policy
    >>> p = Policy.from_choices({"fc": Choice(w_bits=4, a_bits=8)})
    >>> Policy.from_dict(p.to_dict()) == p
    True
"""
from __future__ import annotations

__version__ = "0.1.0"
