"""Proxy scoring as Ray tasks (the workload is loaded on the worker)."""
from __future__ import annotations

from typing import Any


def score_proxy(spec: str, proxy: str, layers: list[dict], space: dict, options: dict | None = None) -> dict[str, Any]:
    """Score ``proxy`` for ``spec``'s model; plain dicts in and out so it runs anywhere."""
    import torch

    from autocomp.profile import LayerInfo
    from autocomp.proxies import get_proxy
    from autocomp.search_spaces import space_from_dict
    from autocomp.workload import load_workload

    torch.set_num_threads(1)
    wl = load_workload(spec)
    ls = [LayerInfo.from_dict(d) for d in layers]
    sens = get_proxy(proxy, **(options or {})).score(wl, ls, space_from_dict(space))
    return sens.to_dict()


def score_on_ray(spec: str, proxy: str, layers, space, options: dict | None = None):
    import ray

    from autocomp.proxies import Sensitivity

    task = ray.remote(num_cpus=1, max_retries=2)(score_proxy)
    d = ray.get(task.remote(spec, proxy, [l.to_dict() for l in layers], space.to_dict(), options))
    return Sensitivity.from_dict(d)
