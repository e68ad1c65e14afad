"""Stage ``score``: a proxy's sensitivity for every (layer, choice) of the space, scored on Ray
once and stored; a re-run (or a resumed study) reads it back.

Example:
    >>> sens = score(store, study, ctx, "loss_delta", workers=2)   # doctest: +SKIP
    >>> sens.omega["conv1"]["w4a8"]                                 # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from autocomp.errors import AutocompError
from autocomp.sensitivity import Sensitivity
from autocomp.stages.context import StudyContext
from autocomp.store import Store
from autocomp.store.repository import StudyInfo

DATA = ("real", "distilled")


def score_key(proxy: str, data: str = "real") -> str:
    """The name a sensitivity is stored under: scores of distilled data are kept apart."""
    return proxy if data == "real" else f"{proxy}@{data}"


def check_data(data: str) -> None:
    if data not in DATA:
        raise AutocompError(f"unknown --data {data!r}: choose from {', '.join(DATA)}")


def covers(sens: Sensitivity | None, ctx: StudyContext) -> bool:
    """Whether ``sens`` scores every choice the study's space allows on every layer."""
    if sens is None:
        return False
    n = len(ctx.layers)
    return all(c.key in sens.omega.get(l.name, {}) for l in ctx.layers for c in ctx.space.choices_for(l, n))


def score(store: Store, study: StudyInfo, ctx: StudyContext, proxy: str, data: str = "real",
          options: Mapping[str, Any] | None = None, workers: int | None = None, device: str = "auto") -> Sensitivity:
    """The stored sensitivity of ``proxy`` when it covers the space, else score it on Ray and store it.

    Args:
        options: the proxy's options (validated here, stored in the study's ``proxy_config``).
        workers: Ray tasks in flight (never changes the result).
        device: where the tasks run: ``auto`` (CUDA when the cluster has GPUs), ``cpu`` or ``cuda``.
    """
    from autocomp.proxies import get_proxy
    from autocomp.workers.proxy_tasks import score_on_ray

    check_data(data)
    p = get_proxy(proxy, **dict(options or {}))
    key = score_key(proxy, data)
    sens = store.load_sensitivity(study, key)
    if covers(sens, ctx):
        return sens
    sens = dataclasses.replace(score_on_ray(ctx.spec, p, list(ctx.layers), ctx.space, workers=workers, data=data,
                                            device=device), proxy=key)
    store.save_sensitivity(study, sens)
    configs = dict(study.config.get("proxy_config") or {})
    configs[key] = p.config_dict()
    store.update_config(study, proxy_config=configs)
    return sens
