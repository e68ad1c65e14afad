"""``--data distilled``: calibration batches synthesised from batch-norm statistics (ZeroQ).

Random inputs are optimised so that every BatchNorm layer sees the mean and standard deviation it
stored during training (ZeroQ's statistic-matching loss). Labels are the model's own predictions
on the result, so loss-based proxies have a target. No user data is read.

Example:
    >>> from autocomp.proxies.distilled import with_data
    >>> wl = with_data(load_workload("digits"), "distilled")        # doctest: +SKIP
    >>> len(wl.calib)                                                # doctest: +SKIP
    4
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from autocomp.errors import AutocompError

DATA_SOURCES = ("real", "distilled")
_BN = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
_CACHE: dict[tuple, list] = {}


def distill_batches(model: torch.nn.Module, sample: Any, batches: int = 4, batch_size: int = 64,
                    steps: int = 200, lr: float = 0.2, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ZeroQ distilled data: ``batches`` batches shaped like ``sample`` (one sample's shape).

    Raises:
        AutocompError: when the model has no BatchNorm layer or its input is not a float tensor.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.running_mean is not None]
    if not bns:
        raise AutocompError("--data distilled needs BatchNorm layers (ZeroQ matches their statistics); "
                            "this model has none: use --data real")
    if not isinstance(sample, torch.Tensor) or not sample.is_floating_point():
        raise AutocompError("--data distilled needs a model whose input is one float tensor")
    model.eval()
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    terms: list[torch.Tensor] = []

    def hook(mod, args):
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean, std = x.mean(dims), (x.var(dims, unbiased=False) + mod.eps).sqrt()
        terms.append((mean - mod.running_mean).norm() + (std - (mod.running_var + mod.eps).sqrt()).norm())

    handles = [m.register_forward_pre_hook(hook) for m in bns]
    g = torch.Generator().manual_seed(seed)
    out = []
    try:
        for _ in range(batches):
            x = torch.randn((batch_size, *sample.shape[1:]), generator=g).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for _ in range(steps):
                terms.clear()
                opt.zero_grad()
                model(x)
                torch.stack(terms).sum().backward()
                opt.step()
            with torch.no_grad():
                xd = x.detach()
                out.append((xd, model(xd).argmax(dim=-1)))
    finally:
        for h in handles:
            h.remove()
        for p, r in saved.items():
            p.requires_grad_(r)
    return out


def with_data(workload, data: str = "real", seed: int = 0, **options: Any):
    """The workload itself for ``real``; a copy whose calibration batches are distilled otherwise."""
    if data not in DATA_SOURCES:
        raise AutocompError(f"unknown --data {data!r}: choose from {', '.join(DATA_SOURCES)}")
    if data == "real":
        return workload
    n = max(len(workload.calib), 1)
    bs = int(options.get("batch_size", workload.calib[0][1].shape[0] if workload.calib else 64))
    steps = int(options.get("steps", 200))
    # An audit scores many proxies of one model: distil once per process and (spec, settings).
    key = (workload.spec, n, bs, steps, seed) if workload.spec else None
    batches = _CACHE.get(key) if key else None
    if batches is None:
        batches = distill_batches(workload.model(), workload.sample_input(), n, bs, steps, seed=seed)
        if key:
            _CACHE[key] = batches
    return dataclasses.replace(workload, calib=list(batches), _model=workload.model())
