"""Shared fixtures of the export tests."""
from __future__ import annotations

import builtins

import pytest


@pytest.fixture
def without_package(monkeypatch):
    """``without_package("torchao")``: from then on, importing that package (or a submodule)
    raises ImportError, as when it is not installed."""
    real = builtins.__import__

    def hide(package: str) -> None:
        def fake(name, *a, **k):
            if name == package or name.startswith(package + "."):
                raise ImportError(name)
            return real(name, *a, **k)

        monkeypatch.setattr(builtins, "__import__", fake)

    return hide
