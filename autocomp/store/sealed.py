"""Database URLs that cross a pickle without their password.

Ray Tune pickles its callbacks and its search algorithm (with Optuna's storage inside) into state
files under the Tune storage directory. A URL with a password must not land there: a
:class:`SealedURL` pickles as the masked URL plus a random token, and only the process that
sealed it can open it again. :class:`SealedRDBStorage` is Optuna's ``RDBStorage`` with the same
rule applied to its own URL.

Example:
    >>> import pickle
    >>> s = SealedURL("postgresql://me:hunter2@db/x")
    >>> b"hunter2" in pickle.dumps(s)
    False
    >>> pickle.loads(pickle.dumps(s)).url      # the sealing process can still open it
    'postgresql://me:hunter2@db/x'
"""
from __future__ import annotations

import secrets
from typing import Any

import optuna

from autocomp.errors import StoreError
from autocomp.store.repository import _shown as masked

# token -> URL, for this process only; never written anywhere.
_LIVE: dict[str, str] = {}
_TOKENS: dict[str, str] = {}


def _seal(url: str) -> str:
    if url not in _TOKENS:
        token = secrets.token_hex(16)
        _TOKENS[url], _LIVE[token] = token, url
    return _TOKENS[url]


def _unseal(token: str, shown: str) -> str:
    try:
        return _LIVE[token]
    except KeyError:
        raise StoreError(f"the connection to {shown} was pickled by another process: its password is not "
                         "stored, so it cannot be reopened here") from None


class SealedURL:
    """A database URL whose pickled form holds no password (see the module docstring)."""

    def __init__(self, url: str):
        self.shown = masked(url)
        self._token = _seal(url)

    @property
    def url(self) -> str:
        """The full URL (only in the process that sealed it)."""
        return _unseal(self._token, self.shown)

    def __getstate__(self) -> dict[str, Any]:
        return {"shown": self.shown, "_token": self._token}

    def __repr__(self) -> str:
        return f"SealedURL({self.shown!r})"


class SealedRDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` whose pickle carries a :class:`SealedURL` instead of its URL."""

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["url"] = SealedURL(self.url)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        sealed = state["url"]
        if isinstance(sealed, SealedURL):
            state = {**state, "url": sealed.url}
        super().__setstate__(state)
