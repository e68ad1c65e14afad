"""Starting or joining Ray: a local instance by default, a cluster with ``--address``/RAY_ADDRESS."""
from __future__ import annotations

import os
import sys
from typing import Any

from autocomp.errors import AutocompError


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Initialise Ray once per process and return the module.

    Args:
        address: ``auto``, ``ray://host:port`` or ``host:port`` of a running cluster; ``None``
            uses ``$RAY_ADDRESS`` when set, else starts a local instance.
        num_cpus: CPUs of a local instance (default: all).
    """
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Workers import the user's workload module by name: give them the controller's sys.path.
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys([os.getcwd(), *paths]))}}
    kwargs: dict[str, Any] = dict(runtime_env=env, logging_level="ERROR", log_to_driver=False)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = address or "a local instance"
        raise AutocompError(f"cannot connect to Ray at {where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from e
    return ray


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
