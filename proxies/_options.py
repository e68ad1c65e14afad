"""A proxy's options: a frozen dataclass per proxy, built and checked from keyword arguments.

Every field has a default and a plain type (``int``, ``float``, ``str``, ``bool``), so a config
is JSON-able (``dataclasses.asdict``) and can be stored with a study and rebuilt from it.
Unknown names, wrong types and out-of-range values raise one-line :class:`AutocompError`\\ s.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opts:
    ...     tol: float = 1e-2
    ...     def __post_init__(self):
    ...         at_least(self, tol=0)
    >>> build_options(Opts, {"tol": 1}, "mine")
    Opts(tol=1.0)
    >>> build_options(Opts, {"tolerance": 1}, "mine")
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: proxy 'mine': unknown option 'tolerance' (options: tol)
    >>> build_options(Opts, {"tol": -1}, "mine")
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: proxy 'mine': tol must be >= 0, got -1.0
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Mapping

from autocomp.errors import AutocompError


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a proxy that takes none."""


@dataclasses.dataclass(frozen=True)
class ChunkOptions:
    """``chunk``: calibration samples per gradient (the proxies that average gradients)."""

    chunk: int = 64

    def __post_init__(self) -> None:
        at_least(self, chunk=1)


def require(ok: bool, message: str) -> None:
    """Raise ``AutocompError(message)`` unless ``ok`` (for the checks of ``__post_init__``)."""
    if not ok:
        raise AutocompError(message)


def at_least(options: Any, **minimums: float) -> None:
    """Raise ``AutocompError`` for the first field of ``options`` below its minimum.

    Counts (ints) read "must be at least", real numbers "must be >=".

    Example:
        >>> at_least(ChunkOptions(chunk=4), chunk=8)
        Traceback (most recent call last):
        ...
        autocomp.errors.AutocompError: chunk must be at least 8, got 4
    """
    for name, lo in minimums.items():
        v = getattr(options, name)
        require(v >= lo, f"{name} must be {'at least' if isinstance(v, int) else '>='} {lo}, got {v}")


def build_options(cls: type, given: Mapping[str, Any], owner: str) -> Any:
    """``cls(**given)`` with names and types checked, ints accepted where floats are expected."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in given:
        if k not in fields:
            known = ", ".join(fields) or "none"
            raise AutocompError(f"proxy {owner!r}: unknown option {k!r} (options: {known})")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(owner, k, hints[k], v) for k, v in given.items()}
    try:
        return cls(**values)
    except AutocompError as e:      # the checks of __post_init__ do not know which proxy they serve
        raise AutocompError(f"proxy {owner!r}: {e}") from None


_KINDS = {bool: "a bool", int: "an integer", float: "a finite number", str: "a string"}


def _coerce(owner: str, name: str, kind: Any, value: Any) -> Any:
    def bad() -> AutocompError:
        return AutocompError(f"proxy {owner!r}: option {name}={value!r} is not {_KINDS.get(kind, kind)}")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad()
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad()
        return value
    return value
