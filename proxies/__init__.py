"""Sensitivity proxies, registered by name.

Example:
    >>> from autocomp.proxies import get_proxy, list_proxies
    >>> "fisher" in list_proxies()
    True
"""
from __future__ import annotations

from autocomp.proxies._base import Proxy, Sensitivity, get_proxy, list_proxies, register

__all__ = ["Proxy", "Sensitivity", "get_proxy", "list_proxies", "register"]
