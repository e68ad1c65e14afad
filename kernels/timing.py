"""Wall-clock timing of a callable on CPU or CUDA (median of repeats after warm-up)."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    from autocomp.errors import AutocompError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise AutocompError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise AutocompError("--device cuda asked for, but PyTorch sees no CUDA device")
    return torch.device(device)


def measure(fn: Callable[[], Any], device: torch.device, repeats: int = 20, warmup: int = 3,
            min_time: float = 0.0) -> float:
    """Median seconds per call of ``fn`` (synchronising CUDA around each call).

    Example:
        >>> measure(lambda: sum(range(100)), torch.device("cpu"), repeats=3) > 0
        True
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        sync()
        times = []
        t_start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - t_start < min_time:
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_pair(fn_a: Callable[[], Any], fn_b: Callable[[], Any], device: torch.device,
                 repeats: int = 20, warmup: int = 3) -> tuple[float, float]:
    """Median seconds of ``fn_a`` and ``fn_b``, timed alternately so that load on a shared
    machine drifts onto both equally (the ratio is what validation reports).
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ta: list[float] = []
    tb: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            fn_a()
            fn_b()
        sync()
        for _ in range(repeats):
            for fn, acc in ((fn_a, ta), (fn_b, tb)):
                t0 = time.perf_counter()
                fn()
                sync()
                acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)
