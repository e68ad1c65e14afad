"""Proxy scoring as Ray tasks: the generic runner of a proxy's own split.

The proxy plans its work (:meth:`~autocomp.proxies.Proxy.parts`); each part runs as one Ray task
that rebuilds the workload and calls :meth:`~autocomp.proxies.Proxy.score_part`; the controller
hands the results, in part order, to :meth:`~autocomp.proxies.Proxy.combine`. Parts are planned
without knowing the worker count and draw their randomness from seeds named by (seed, batch,
probe) or by layer name, so the result with N workers is the result with one, and the result
of ``proxy.score`` in one process. ``workers`` only bounds the parts in flight.

Adaptive proxies (a single-batch ``hessian_trace`` stops once its probes agree) say so with
:meth:`~autocomp.proxies.Proxy.done`: it is checked on the results so far in part order, no part
is submitted after it holds, and ``combine`` sees the shortest prefix for which it holds. Parts
already in flight then finish unused.

Devices: with ``device="auto"`` (the default) on a cluster that reports GPUs, each task asks
for an even share of them (:func:`autocomp.workers.placement.place`) and moves the workload's
model and calibration batches to CUDA before scoring its part; results are plain floats, and
``combine`` runs here on the CPU. On a CPU-only cluster nothing moves.

Example:
    >>> sens = score_on_ray("digits", "hessian_trace", layers, space, workers=2)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable, Sequence


def _workload(spec: str, batches=None):
    import torch

    from autocomp.workers.runtime_env import worker_spec
    from autocomp.workload import load_workload

    torch.set_num_threads(1)
    wl = load_workload(worker_spec(spec))   # the shipped copy of a user's file, not the controller's path
    if batches is not None:  # distilled on the controller once, shipped to every task
        import dataclasses

        return dataclasses.replace(wl, calib=list(batches))
    return wl


def run_part(spec: str, proxy, layers: list[dict], space: dict, part: dict, batches=None,
             device: str = "cpu") -> Any:
    """One part of ``proxy``'s work on this process, on ``device``; plain values in and out (any Ray node)."""
    from autocomp.devices import on_device
    from autocomp.profile import LayerInfo
    from autocomp.proxies import Part
    from autocomp.search_spaces import space_from_dict

    wl = on_device(_workload(spec, batches), device)
    ls = [LayerInfo.from_dict(d) for d in layers]
    return proxy.score_part(wl, ls, space_from_dict(space), Part.from_dict(part))


def _run(submit: Callable[[Any], Any], parts: Sequence, width: int, done: Callable[[list], bool]) -> list:
    """Results of ``parts`` in order, at most ``width`` in flight, up to the first prefix ``done``."""
    import ray

    results: list = []
    ready: dict[int, Any] = {}
    flying: dict[Any, int] = {}
    nxt = 0
    while nxt < len(parts) or flying:
        while nxt < len(parts) and len(flying) < max(1, width):
            flying[submit(parts[nxt])] = nxt
            nxt += 1
        finished, _ = ray.wait(list(flying), num_returns=1)
        for ref in finished:
            ready[flying.pop(ref)] = ray.get(ref)
        while len(results) in ready:
            results.append(ready.pop(len(results)))
            if done(results):
                return results
    return results


def score_on_ray(spec: str, proxy, layers, space, options: dict | None = None, workers: int | None = None,
                 data: str = "real", device: str = "auto"):
    """Score ``proxy`` (a registered name, or a :class:`~autocomp.proxies.Proxy`) on Ray.

    Args:
        options: the proxy's options (with a name); checked before any Ray work.
        workers: parts in flight at once (default: one per cluster CPU); never changes the result.
        data: ``real`` or ``distilled`` (ZeroQ batches, made once here and shipped to the tasks).
        device: ``auto`` (CUDA when the cluster has GPUs), ``cpu`` or ``cuda``.

    Raises:
        AutocompError: a bad option, or ``cuda`` on a cluster without GPUs (before any task).

    Returns:
        The :class:`~autocomp.sensitivity.Sensitivity`, equal to ``proxy.score`` in one process.
    """
    import ray

    from autocomp.proxies import get_proxy
    from autocomp.proxies.distilled import with_data
    from autocomp.workers.placement import place
    from autocomp.workers.session import cluster_cpus
    from autocomp.workload import load_workload

    p = get_proxy(proxy, **(options or {})) if isinstance(proxy, str) else proxy
    workers = workers or cluster_cpus()
    device, gpus = place(device, workers)
    # Distilled batches follow the proxy's seed, as its probes do.
    wl = with_data(load_workload(spec), data, int(getattr(p.config, "seed", 0)))
    batches_ref = ray.put(list(wl.calib)) if data != "real" else None
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(run_part)
    proxy_ref = ray.put(p)
    ld, sd = [l.to_dict() for l in layers], space.to_dict()
    results = _run(lambda part: task.remote(spec, proxy_ref, ld, sd, part.to_dict(), batches_ref, device),
                   p.parts(wl, layers, space), workers, lambda rs: p.done(wl, layers, space, rs))
    return p.combine(wl, layers, space, results)
