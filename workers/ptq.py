"""PTQ evaluation on long-lived Ray actors that load the workload once."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import torch

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.policy import Policy, apply
from autocomp.profile import is_quantizable
from autocomp.workers.runtime_env import worker_spec
from autocomp.workload import load_workload


class PTQEvaluator:
    """Loads the workload and calibrates activation ranges once; evaluates policies after.

    Example:
        >>> ev = PTQEvaluator("digits")                      # doctest: +SKIP
        >>> ev.evaluate(policy.to_dict())["accuracy"]        # doctest: +SKIP
    """

    def __init__(self, spec: str, act_bits: Sequence[int] = (2, 3, 4, 5, 6, 7, 8, 16), threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.workload = load_workload(worker_spec(spec))
        self.model = self.workload.model()
        names = [n for n, m in self.model.named_modules() if n and is_quantizable(m)]
        stats = activation_stats(self.model, names, self.workload.calib)
        self.ranges = activation_ranges(stats, act_bits)

    def ping(self) -> bool:
        return True

    def evaluate(self, policy: dict) -> dict[str, Any]:
        t0 = time.perf_counter()
        pol = Policy.from_dict(policy)
        compressed = apply(self.model, pol, self.ranges)
        acc = self.workload.evaluate(compressed)
        return {"policy_id": pol.id, "accuracy": float(acc), "seconds": time.perf_counter() - t0,
                "node": _node_id()}


def _node_id() -> str:
    """The Ray node this runs on (stored with each evaluation: which machine measured it)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - outside Ray (tests, benchmarks): no node
        return ""


def evaluate_on_ray(spec: str, policies: Sequence[Policy], on_result: Callable[[dict], None],
                    workers: int | None = None, on_error: Callable[[str, BaseException], None] | None = None) -> None:
    """Evaluate ``policies`` on a pool of actors, calling ``on_result`` as each one lands.

    A policy whose actor died (its worker process or its whole node) is evaluated again on a live
    actor and a replacement actor is started (:func:`autocomp.workers.dispatch.dispatch`); a
    policy whose evaluation raised goes to ``on_error`` (or raises).
    """
    import ray

    from autocomp.workers.dispatch import dispatch
    from autocomp.workers.session import cluster_cpus

    if not policies:
        return
    n = max(1, min(len(policies), workers or cluster_cpus()))
    # max_restarts=0: a restart pinned to a dead node's resources can wait forever; dispatch()
    # starts replacements itself and re-queues the lost call.
    Actor = ray.remote(num_cpus=1, max_restarts=0)(PTQEvaluator)
    actors = [Actor.remote(spec) for _ in range(n)]
    live: list = []
    try:
        live = dispatch(lambda: Actor.remote(spec), actors, list(policies),
                        call=lambda a, p: a.evaluate.remote(p.to_dict()),
                        on_result=lambda _p, res: on_result(res),
                        on_error=None if on_error is None else (lambda p, e: on_error(p.id, e)),
                        key=lambda p: p.id)
    finally:
        for a in {id(a): a for a in [*actors, *live]}.values():
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead: nothing to release
                pass


def iter_chunks(xs: Iterable, n: int):
    buf = []
    for x in xs:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
