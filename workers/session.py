"""Starting or joining Ray: a local instance by default, a cluster with ``--address``/RAY_ADDRESS."""
from __future__ import annotations

import os
import sys
from typing import Any

from autocomp.errors import AutocompError


def ensure_ray(address: str | None = None, num_cpus: int | None = None, model: str | None = None) -> Any:
    """Initialise Ray once per process and return the module.

    Args:
        address: ``auto``, ``ray://host:port`` or ``host:port`` of a running cluster; ``None``
            uses ``$RAY_ADDRESS`` when set, else starts a local instance.
        num_cpus: CPUs of a local instance (default: all).
        model: the ``--model`` spec; on a cluster its code is shipped to every node
            (:func:`autocomp.workers.runtime_env.cluster_runtime_env`).

    Example:
        >>> ray = ensure_ray("auto", model="my_models.py:make")   # doctest: +SKIP
    """
    import ray

    from autocomp.workers.runtime_env import cluster_runtime_env, with_spec_map

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        # Remote nodes share neither our file system nor our sys.path: ship the workload's code.
        env, worker = cluster_runtime_env(model)
        env = with_spec_map(env, model, worker)
    else:
        # Local workers import the user's workload module by name: give them our sys.path.
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys([os.getcwd(), *paths]))}}
    kwargs: dict[str, Any] = dict(runtime_env=env, logging_level="ERROR", log_to_driver=False)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local" always starts a fresh instance: a bare ray.init() would silently join any
            # `ray start` cluster left running on this machine.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = address or "a local instance"
        raise AutocompError(f"cannot connect to Ray at {where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from e
    return ray


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
