"""Placement on the Ray cluster: which device the workers use and the GPU share each one asks for.

``auto`` is CUDA when the cluster reports GPU resources, else the CPU (``cuda`` without GPUs is
an error, raised before any worker starts). On CUDA the ``width`` workers of a pool (or proxy
parts in flight) share the cluster's GPUs evenly (at most one GPU each), so that all of them
fit and none waits for a GPU that will never be free; Ray then sets each worker's visible device.

Example:
    >>> place("auto", width=4)              # on a CPU-only cluster   # doctest: +SKIP
    ('cpu', 0.0)
    >>> place("auto", width=4)              # one GPU                  # doctest: +SKIP
    ('cuda', 0.25)
"""
from __future__ import annotations

import math

from autocomp.devices import resolve_device


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster reports (0 without any). Before Ray is started: those of
    this machine, which the local Ray that the first remote call starts would report."""
    import ray

    if not ray.is_initialized():
        import torch

        return float(torch.cuda.device_count())
    return float(ray.cluster_resources().get("GPU", 0.0))


def gpu_share(gpus: float, width: int) -> float:
    """GPUs per worker when ``width`` workers share ``gpus`` (at most 1; Ray keeps 4 decimals).

    Example:
        >>> gpu_share(1, 3), gpu_share(8, 2), gpu_share(0, 2)
        (0.3333, 1.0, 0.0)
    """
    if gpus <= 0:
        return 0.0
    return min(1.0, math.floor(gpus / max(1, width) * 10_000) / 10_000)


def place(device: str, width: int) -> tuple[str, float]:
    """``(device, num_gpus per worker)`` for ``width`` workers on the connected cluster.

    Raises:
        AutocompError: ``cuda`` requested and the cluster reports no GPU; an unknown device.
    """
    gpus = cluster_gpus()
    resolved = resolve_device(device, gpus)
    return resolved, (gpu_share(gpus, width) if resolved == "cuda" else 0.0)
