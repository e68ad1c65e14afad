"""Where the work runs: device names, resolving ``auto`` against a cluster, moving a workload's
model and batches to a device, and the evaluation dtype (autocast).

``--device auto`` means CUDA when the Ray cluster reports GPU resources, else the CPU; ``cuda``
on a cluster without GPUs is refused before anything runs. Inside a Ray worker that holds a GPU
the device is plain ``cuda`` (Ray makes the worker's GPU its device 0).

The evaluation dtype (``--eval-dtype float32|float16|bfloat16``) is applied as autocast around
the evaluation forward passes: weights, quantization grids and calibration stay in float32, so a
policy's codes do not depend on it; matrix multiplies and convolutions run in the lower precision.

Example:
    >>> resolve_device("auto", gpus=0)
    'cpu'
    >>> resolve_device("auto", gpus=2)
    'cuda'
    >>> resolve_device("cuda", gpus=0)
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: --device cuda: the Ray cluster reports no GPU (use --device auto or cpu)
    >>> to_device({"ids": torch.ones(2, dtype=torch.long)}, "cpu")["ids"].device.type
    'cpu'
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any, ContextManager, Mapping

import torch

from autocomp.errors import AutocompError

DEVICES = ("auto", "cpu", "cuda")
EVAL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_device(device: str, what: str = "--device") -> str:
    """``device`` if it is one of :data:`DEVICES`, else a one-line :class:`AutocompError`."""
    if device not in DEVICES:
        raise AutocompError(f"{what} must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def check_eval_dtype(dtype: str, what: str = "--eval-dtype") -> str:
    """``dtype`` if it is one of :data:`EVAL_DTYPES`, else a one-line :class:`AutocompError`."""
    if dtype not in EVAL_DTYPES:
        raise AutocompError(f"{what} must be one of {', '.join(EVAL_DTYPES)}, got {dtype!r}")
    return dtype


def resolve_device(device: str, gpus: float) -> str:
    """``cpu`` or ``cuda`` for a requested device on a cluster with ``gpus`` GPUs in all.

    Raises:
        AutocompError: ``cuda`` requested and the cluster has no GPU; an unknown name.
    """
    check_device(device)
    if device == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if device == "cuda" and gpus <= 0:
        raise AutocompError("--device cuda: the Ray cluster reports no GPU (use --device auto or cpu)")
    return device


def local_device(device: str) -> str:
    """``cpu`` or ``cuda`` for this process: ``auto`` is CUDA when torch sees a GPU.

    Raises:
        AutocompError: ``cuda`` and this process sees no CUDA device.
    """
    check_device(device, "device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AutocompError("device 'cuda': this process sees no CUDA device")
    return device


def to_device(obj: Any, device: str | torch.device) -> Any:
    """``obj`` with every tensor moved to ``device`` (tensors, tuples, lists and mappings of them,
    e.g. a tokenizer's ``BatchEncoding``; no copy of a tensor already there)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def on_device(workload: Any, device: str) -> Any:
    """The workload with its model and batches on ``device`` (the same object for ``cpu``).

    A copy otherwise: the model is copied before it moves, so the caller's workload (and any
    proxy or evaluator sharing it in this process) keeps its CPU model.

    Example:
        >>> on_device(wl, "cpu") is wl                          # doctest: +SKIP
        True
    """
    if device == "cpu":
        return workload
    model = copy.deepcopy(workload.model()).to(device).eval()
    return dataclasses.replace(workload, calib=[to_device(b, device) for b in workload.calib],
                               eval=[to_device(b, device) for b in workload.eval], _model=model)


def autocast(device: str, dtype: str) -> ContextManager:
    """Autocast to ``dtype`` on ``device``'s type; no context at all for float32.

    Example:
        >>> with autocast("cpu", "bfloat16"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    check_eval_dtype(dtype, "eval_dtype")
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=EVAL_DTYPES[dtype])
