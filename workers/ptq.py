"""PTQ evaluation on long-lived Ray actors that load the workload once."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import torch

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.policy import Policy, apply
from autocomp.profile import is_quantizable
from autocomp.workload import load_workload


class PTQEvaluator:
    """Loads the workload and calibrates activation ranges once; evaluates policies after.

    Example:
        >>> ev = PTQEvaluator("digits")                      # doctest: +SKIP
        >>> ev.evaluate(policy.to_dict())["accuracy"]        # doctest: +SKIP
    """

    def __init__(self, spec: str, act_bits: Sequence[int] = (2, 3, 4, 5, 6, 7, 8, 16), threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.workload = load_workload(spec)
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
        return {"policy_id": pol.id, "accuracy": float(acc), "seconds": time.perf_counter() - t0}


def evaluate_on_ray(spec: str, policies: Sequence[Policy], on_result: Callable[[dict], None],
                    workers: int | None = None, on_error: Callable[[str, BaseException], None] | None = None) -> None:
    """Evaluate ``policies`` on a pool of actors, calling ``on_result`` as each one lands.

    Dead actors are restarted by Ray and their task retried (``max_restarts``/``max_task_retries``);
    a policy whose evaluation still fails goes to ``on_error`` (or raises).
    """
    import ray

    from autocomp.workers.session import cluster_cpus

    if not policies:
        return
    n = max(1, min(len(policies), workers or cluster_cpus()))
    Actor = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(PTQEvaluator)
    actors = [Actor.remote(spec) for _ in range(n)]
    queue = list(policies)
    inflight: dict[Any, tuple[Any, Policy]] = {}

    def submit(actor) -> None:
        if queue:
            p = queue.pop(0)
            inflight[actor.evaluate.remote(p.to_dict())] = (actor, p)

    try:
        for a in actors:
            submit(a)
        while inflight:
            done, _ = ray.wait(list(inflight), num_returns=1)
            ref = done[0]
            actor, pol = inflight.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - surfaced through on_error or re-raised
                if on_error is None:
                    raise
                on_error(pol.id, e)
            else:
                on_result(res)
            submit(actor)
    finally:
        for a in actors:
            ray.kill(a)


def iter_chunks(xs: Iterable, n: int):
    buf = []
    for x in xs:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
