"""Starting or joining Ray: a local instance by default, a cluster with ``--address``/RAY_ADDRESS.

``ray://host:port`` joins through the cluster's Ray Client server (``pip install
'autocomp[client]'``); the controller then runs here and its Ray calls go over gRPC. Clusters of
Ray 2.60 may require token authentication (``RAY_AUTH_MODE=token`` and the cluster's token in
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), which Ray reports, after
about 30 s of retries, only as a connection timeout: :func:`check_ray_client` asks once first.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

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
        env = {"env_vars": {"PYTHONPATH": local_worker_path()}}
    kwargs: dict[str, Any] = dict(runtime_env=env, logging_level="ERROR", log_to_driver=False)
    # ray.init installs its own C-level SIGTERM handler (it logs and exits): keep the caller's, so
    # a controller stopped by SIGTERM still marks its study interrupted.
    before = _python_sigterm_handler()
    try:
        if address:
            if address.startswith("ray://"):
                require_client(address)     # a missing install is said first: nothing to contact
            check_reachable(address)
            if address.startswith("ray://"):
                check_ray_client(address)
                _init_client(ray, address, kwargs)
            else:
                ray.init(address=address, **kwargs)
        else:
            # "local" always starts a fresh instance: a bare ray.init() would silently join any
            # `ray start` cluster left running on this machine.
            with _loopback_only():
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = address or "a local instance"
        why = _reason(e)
        if (address and address.startswith("ray://") and isinstance(e, ConnectionError)
                and "Initialization failure" not in str(e)):
            why += " (is the cluster's Ray Client server port, 10001 by default, open to this machine?)"
        raise AutocompError(f"cannot connect to Ray at {where}: {why}") from e
    if before is not None:
        signal.signal(signal.SIGTERM, before)
    return ray


# What the head's Ray Client server answers when the server it starts for this connection did not
# come up in time (it waits 30 s: RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S on the head): a loaded
# head, not a wrong setting, so the connection is tried again.
_TRANSIENT = ("Proxy failed to Connect to backend", "Starting Ray client server failed")
CLIENT_ATTEMPTS = 3


def _init_client(ray: Any, address: str, kwargs: dict[str, Any]) -> None:
    """``ray.init("ray://...")``, tried again (up to :data:`CLIENT_ATTEMPTS` times in all) while
    the head reports that the server it starts for each client connection did not come up."""
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, **kwargs)
            return
        except ConnectionError as e:
            if attempt == CLIENT_ATTEMPTS or not any(t in str(e) for t in _TRANSIENT):
                raise
            print(f"ray: {address}: the head's client server did not start in time ({_reason(e)}); "
                  f"connecting again ({attempt + 1}/{CLIENT_ATTEMPTS})", file=sys.stderr, flush=True)


def _reason(e: BaseException) -> str:
    """One line saying why Ray refused: the exception's first line, and where that only announces
    the server's traceback ("Initialization failure from server:"), the traceback's last line."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


_CLUSTER_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Start a local instance whose servers (GCS, raylet, workers) listen on 127.0.0.1 only.

    Ray binds a local instance to the machine's network address, on all interfaces, without
    authentication: anyone on the network could submit code to it. With "clusters" disabled
    (the setting Ray uses on macOS and Windows) the node address is loopback and every server
    binds there. Ray reads the setting when it is imported, so the module value is set too, and
    put back afterwards.
    """
    from ray._private import ray_constants

    before_env, before = os.environ.get(_CLUSTER_VAR), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_CLUSTER_VAR] = "0"          # the processes ray.init spawns read it too
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop(_CLUSTER_VAR, None)
        else:
            os.environ[_CLUSTER_VAR] = before_env
        if before is not None:
            ray_constants.ENABLE_RAY_CLUSTER = before


def local_worker_path() -> str:
    """``PYTHONPATH`` for local workers: the controller's own ``sys.path``, nothing more.

    Workers import the user's workload module by name, so they need what the controller can
    import. The current directory is not added (it is on ``sys.path`` only when the controller put
    it there): a ``sitecustomize.py`` lying in it would otherwise run in every worker.
    """
    paths = [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)]
    return os.pathsep.join(dict.fromkeys(paths))


def _python_sigterm_handler() -> Any:
    """The Python SIGTERM handler the caller installed, or None (default, ignored, not main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    h = signal.getsignal(signal.SIGTERM)
    return h if callable(h) and h not in (signal.SIG_DFL, signal.SIG_IGN) else None


def require_client(address: str) -> None:
    """Ray Client (``ray://``) needs grpcio: say which extra installs it."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise AutocompError(f"cannot connect to Ray at {address}: Ray Client (ray://) is not installed: "
                            "pip install 'autocomp[client]' (or 'ray[client]')") from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line when nothing listens at a ``host:port`` / ``ray://host:port`` address
    (Ray itself retries such an address for minutes). ``auto`` is left to Ray.

    Example:
        >>> check_reachable("ray://127.0.0.1:1")
        Traceback (most recent call last):
        ...
        autocomp.errors.AutocompError: cannot connect to Ray at ray://127.0.0.1:1: nothing answers at 127.0.0.1:1 (is the cluster up, and is the port open to this machine?)
    """
    import socket

    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        return   # "auto", or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError:
        raise AutocompError(f"cannot connect to Ray at {address}: nothing answers at {host}:{port} (is the "
                            "cluster up, and is the port open to this machine?)") from None


def check_ray_client(address: str, timeout: float = 10.0) -> None:
    """Fail in one line where ``ray.init("ray://...")`` would fail late or unclearly.

    Raises:
        AutocompError: Ray Client is not installed, or the server at ``address`` rejects this
            process's authentication (none sent, or a wrong token). Anything else (not
            reachable yet, a Ray without this gRPC API) is left to ``ray.init`` and its retries.

    Example:
        >>> check_ray_client("ray://head:10001")   # doctest: +SKIP
    """
    require_client(address)
    import grpc

    try:
        import ray.core.generated.ray_client_pb2 as pb
        import ray.core.generated.ray_client_pb2_grpc as pb_grpc
        from ray._private.grpc_utils import init_grpc_channel  # adds the token when RAY_AUTH_MODE=token
    except ImportError:
        return
    target = address[len("ray://"):].rstrip("/")
    try:
        channel = init_grpc_channel(target, asynchronous=False)
    except Exception:  # noqa: BLE001 - a probe only: ray.init reports its own errors
        return
    try:
        pb_grpc.RayletDriverStub(channel).ClusterInfo(
            pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING), timeout=timeout)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            return
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            fix = ("it rejected this token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): "
                   "use the cluster's, from `ray get-auth-token` on the head")
        else:
            fix = ("it requires token authentication: export RAY_AUTH_MODE=token and the cluster's token "
                   "as RAY_AUTH_TOKEN (`ray get-auth-token` on the head)")
        raise AutocompError(f"cannot connect to Ray at {address}: {fix}") from None
    finally:
        channel.close()


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
