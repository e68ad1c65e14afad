"""Sensitivity proxies, registered by name; each plans its own split into parts.

Example:
    >>> from autocomp.proxies import get_proxy, list_proxies
    >>> "fisher" in list_proxies()
    True
    >>> [p.kind for p in get_proxy("quant_mse").parts(None, [], None)]
    ['whole']
"""
from __future__ import annotations

from autocomp.proxies._base import Part, Proxy, get_proxy, list_proxies, register
from autocomp.sensitivity import Sensitivity

__all__ = ["Part", "Proxy", "Sensitivity", "get_proxy", "list_proxies", "register"]
