"""Helpers shared by the value types that cross process boundaries (``to_dict`` / ``from_dict``).

Example:
    >>> from autocomp.values import check_version
    >>> check_version("Policy", {"version": 1}, 1)
    >>> check_version("Policy", {"version": 7}, 1)
    Traceback (most recent call last):
    ...
    autocomp.errors.VersionError: Policy version 7 is newer than this autocomp reads (version 1): upgrade autocomp
"""
from __future__ import annotations

from typing import Any, Mapping

from autocomp.errors import VersionError


def check_version(kind: str, d: Mapping[str, Any], supported: int) -> None:
    """Raise a one-line error when ``d`` was written by another version of ``kind``.

    A missing ``version`` means version 1 (values written before versions were checked).
    """
    try:
        v = int(d.get("version", 1))
    except (TypeError, ValueError):
        raise VersionError(f"{kind}: version {d.get('version')!r} is not a number") from None
    if v > supported:
        raise VersionError(f"{kind} version {v} is newer than this autocomp reads (version {supported}): "
                           "upgrade autocomp")
    if v != supported:
        raise VersionError(f"{kind} version {v} is older than this autocomp reads (version {supported}) and "
                           "has no upgrade path: re-create it")
