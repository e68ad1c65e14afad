"""A pool of PTQ evaluator actors kept alive across batches (refinement asks for a batch at a time).

:func:`autocomp.workers.ptq.evaluate_on_ray` starts and kills its actors per call, which is right
for one sweep; the refinement loop evaluates a batch per Optuna ``ask``/``tell`` round, and each
actor loads the workload and calibrates for seconds, so the pool keeps them warm.

Example:
    >>> with PTQPool("digits", workers=2) as pool:                  # doctest: +SKIP
    ...     pool.map(policies, on_result=print)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from autocomp.policy import Policy


class PTQPool:
    """``workers`` long-lived :class:`~autocomp.workers.ptq.PTQEvaluator` actors for workload ``spec``.

    Args:
        spec: the ``--model`` string each actor loads.
        workers: number of actors (default: one per CPU of the Ray cluster).
    """

    def __init__(self, spec: str, workers: int | None = None):
        import ray

        from autocomp.workers.ptq import PTQEvaluator
        from autocomp.workers.session import cluster_cpus

        self.spec = spec
        self.size = max(1, workers or cluster_cpus())
        # As evaluate_on_ray: no Ray restarts (they can wait forever for a dead node's CPUs);
        # autocomp.workers.dispatch re-queues a lost call on a live actor and starts a replacement.
        self._cls = ray.remote(num_cpus=1, max_restarts=0)(PTQEvaluator)
        self._actors = [self._cls.remote(spec) for _ in range(self.size)]

    def __enter__(self) -> "PTQPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def warm(self) -> None:
        """Block until every actor has loaded its workload (benchmarks time calls after this)."""
        import ray

        ray.get([a.ping.remote() for a in self._actors])

    def map(self, policies: Sequence[Policy], on_result: Callable[[dict], None],
            on_error: Callable[[str, BaseException], None] | None = None) -> None:
        """Evaluate ``policies``, one in flight per actor, calling ``on_result`` as each lands.

        A policy whose actor (or node) died is evaluated again on a live actor; one whose
        evaluation raised goes to ``on_error`` (or raises).
        """
        from autocomp.workers.dispatch import dispatch

        if not policies:
            return
        self._actors = dispatch(lambda: self._cls.remote(self.spec), self._actors, list(policies),
                                call=lambda a, p: a.evaluate.remote(p.to_dict()),
                                on_result=lambda _p, res: on_result(res),
                                on_error=None if on_error is None else (lambda p, e: on_error(p.id, e)),
                                key=lambda p: p.id)

    def close(self) -> None:
        import ray

        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead: nothing to release
                pass
        self._actors = []
