"""Where trained built-in models are cached (``AUTOCOMP_CACHE``, default ~/.cache/autocomp)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch


def cache_dir() -> Path:
    d = Path(os.environ.get("AUTOCOMP_CACHE", Path.home() / ".cache" / "autocomp"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_state(key: str, train: Callable[[], dict]) -> dict:
    """Load a state dict cached under ``key``, training (and caching atomically) on first use."""
    path = cache_dir() / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            path.unlink(missing_ok=True)  # a torn file from a killed writer: train again
    state = train()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return state
