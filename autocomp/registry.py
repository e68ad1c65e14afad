"""One registry type for every plug-in family (proxies, allocators, evaluators, metrics ...).

Entries are registered by name as an object, a class or factory, or a ``"module:attr"`` string
imported on first use (so listing names never imports heavy modules). An unknown name is one
:class:`~autocomp.errors.AutocompError` line naming the choices. Names list sorted, or in
registration order with ``ordered=True`` (cost metrics: the order of table columns).

Example:
    >>> from autocomp.registry import Registry
    >>> r = Registry("allocator")
    >>> r.register("sum", sum)
    >>> r.get("sum")([1, 2]), r.names()
    (3, ['sum'])
    >>> Registry("metric", {"b": 1, "a": 2}, ordered=True).names()
    ['b', 'a']
    >>> r.get("max")
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: unknown allocator 'max': choose from sum
"""
from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

from autocomp.errors import AutocompError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one family; ``kind`` names the family in error messages."""

    def __init__(self, kind: str, entries: dict[str, T | str] | None = None, ordered: bool = False):
        self.kind = kind
        self.ordered = ordered
        self._entries: dict[str, T | str] = dict(entries or {})

    def copy(self) -> "Registry[T]":
        """An independent registry with the same entries (a test registers into it, then drops it)."""
        return Registry(self.kind, self._entries, self.ordered)

    def register(self, name: str, entry: T | str) -> None:
        """Add (or replace, in place) ``name``: an object, or ``"module:attr"`` imported lazily."""
        if not name or not isinstance(name, str):
            raise AutocompError(f"a {self.kind} needs a non-empty name")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """The registered names: sorted, or in registration order when ``ordered``."""
        return list(self._entries) if self.ordered else sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (imported now if it was given as a string)."""
        if name not in self._entries:
            raise AutocompError(f"unknown {self.kind} {name!r}: choose from {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str) and ":" in entry:
            mod, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(mod), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]
