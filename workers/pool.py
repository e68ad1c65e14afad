"""One pool of warm Ray actors that hosts any registered evaluator.

Each actor loads the workload once, builds the evaluator with its options and runs its ``setup``
once (PTQ calibrates there), then evaluates policy after policy. The pool owns placement (CPUs
and GPUs per actor), dispatch and dead-worker recovery (:func:`autocomp.workers.dispatch.dispatch`:
a call whose actor or node died is re-queued on a live actor and a replacement is started) and
closing. Results come back as :class:`~autocomp.metrics.Metrics`; the controller adds costs and
stores them. Actors start when first needed, at most one per policy of the largest batch so far,
so a sweep of three policies on a 16-CPU cluster starts three.

Devices: ``device="auto"`` (the default) places the actors on CUDA when the cluster reports GPUs,
each holding an even share of them (:func:`autocomp.workers.placement.place`), and sets the
evaluator's ``device`` option so that its ``prepare`` moves the model and batches there; on a
CPU-only cluster nothing changes. ``cuda`` without GPUs is refused before any actor starts. An
evaluator whose ``Options`` do not derive from :class:`~autocomp.evaluators.DeviceOptions` stays
on the CPU.

Example:
    >>> from autocomp.workers.pool import EvaluatorPool
    >>> with EvaluatorPool("digits", evaluator="ptq", workers=2) as pool:     # doctest: +SKIP
    ...     pool.map(policies, on_result=lambda m: print(m.policy_id, m.quality))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from autocomp.metrics import Metrics
from autocomp.policy import Policy


class EvaluatorActor:
    """What runs in each actor: one workload, one evaluator, set up once."""

    def __init__(self, spec: str, evaluator: str, options: Mapping[str, Any], threads: int = 1):
        import torch

        from autocomp.evaluators import get_evaluator
        from autocomp.workers.runtime_env import worker_spec
        from autocomp.workload import load_workload

        # One intra-op thread per CPU the actor holds: more would oversubscribe the node.
        torch.set_num_threads(max(1, threads))
        self.workload = load_workload(worker_spec(spec))
        self.evaluator = get_evaluator(evaluator, **dict(options))
        self.evaluator.prepare(self.workload)

    def ping(self) -> bool:
        return True

    def evaluate(self, policy: dict) -> dict[str, Any]:
        m = self.evaluator.evaluate(self.workload, Policy.from_dict(policy))
        # Which machine measured it is a fact of placement, known here and not to the evaluator.
        return dataclasses.replace(m, extras={**m.extras, "node": _node_id()}).to_dict()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class EvaluatorPool:
    """Up to ``workers`` long-lived actors evaluating policies of workload ``spec`` with ``evaluator``.

    Args:
        spec: the ``--model`` string each actor loads.
        evaluator: a registered evaluator name, or a ``package.module:Class`` / ``file.py:Class``
            spec the actors can import (how an evaluator of your own reaches them).
        options: the evaluator's options (a mapping, or its ``Options`` instance).
        workers: most actors at once (default: one per CPU of the Ray cluster).
        num_cpus: CPUs each actor holds (its torch thread count too).
        num_gpus: GPUs each actor holds on CUDA (default: an even share of the cluster's).
        device: ``auto`` (CUDA when the cluster has GPUs), ``cpu`` or ``cuda``; an ``options``
            entry ``device`` takes precedence.

    Raises:
        AutocompError: an unknown evaluator, a bad option, or ``cuda`` on a cluster without
            GPUs, before any actor starts.
    """

    def __init__(self, spec: str, evaluator: str = "ptq", options: Any = None, workers: int | None = None,
                 num_cpus: float = 1, num_gpus: float | None = None, device: str = "auto"):
        import ray

        from autocomp.errors import AutocompError
        from autocomp.evaluators import get_evaluator
        from autocomp.workers.placement import place
        from autocomp.workers.session import cluster_cpus

        if dataclasses.is_dataclass(options):
            options = dataclasses.asdict(options)
        options = dict(options or {})
        # Built here once so that a bad name or option fails in one line, not in every actor.
        self.options = get_evaluator(evaluator, **options).options_dict()
        self.spec, self.evaluator = spec, evaluator
        self.size = max(1, workers or cluster_cpus())
        self.device, share = place(options.get("device", device), self.size)
        if "device" in self.options:
            self.options["device"] = self.device
        elif self.device == "cuda":
            if options.get("device", device) == "cuda":
                raise AutocompError(f"evaluator {evaluator!r} runs on the CPU only: its Options do not derive "
                                    "from autocomp.evaluators.DeviceOptions")
            self.device, share = "cpu", 0.0
        num_gpus = (share if num_gpus is None else num_gpus) if self.device == "cuda" else 0
        # No Ray restarts (they can wait forever for a dead node's resources): dispatch() re-queues
        # a lost call on a live actor and starts a replacement.
        self._cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(EvaluatorActor)
        self._threads = max(1, int(num_cpus))
        self._actors: list[Any] = []

    def __enter__(self) -> "EvaluatorPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> Any:
        return self._cls.remote(self.spec, self.evaluator, self.options, self._threads)

    def _grow(self, n: int) -> None:
        while len(self._actors) < min(self.size, n):
            self._actors.append(self._start())

    def warm(self) -> None:
        """Start every actor and block until each has set up (benchmarks time calls after this)."""
        import ray

        self._grow(self.size)
        ray.get([a.ping.remote() for a in self._actors])

    def map(self, policies: Sequence[Policy], on_result: Callable[[Metrics], None],
            on_error: Callable[[str, BaseException], None] | None = None) -> None:
        """Evaluate ``policies``, one in flight per actor, calling ``on_result`` as each lands.

        A policy whose actor (or node) died is evaluated again on a live actor; one whose
        evaluation raised goes to ``on_error(policy_id, exception)`` (or raises).
        """
        from autocomp.workers.dispatch import dispatch

        if not policies:
            return
        self._grow(len(policies))
        self._actors = dispatch(self._start, self._actors, list(policies),
                                call=lambda a, p: a.evaluate.remote(p.to_dict()),
                                on_result=lambda _p, res: on_result(Metrics.from_dict(res)),
                                on_error=None if on_error is None else (lambda p, e: on_error(p.id, e)),
                                key=lambda p: p.id)

    def close(self) -> None:
        """Kill every actor (a closed pool starts fresh ones if used again)."""
        import ray

        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead: nothing to release
                pass
        self._actors = []
