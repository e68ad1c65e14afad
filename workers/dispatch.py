"""Work items on a pool of Ray actors that survives dead workers and dead nodes.

Ray's own actor restarts (``max_restarts``/``max_task_retries``) restart a dead actor where its
resources fit; when a whole node dies and the surviving nodes' CPUs are all held by the other
actors, the restart waits forever and so does the retried call. So the pool's actors run with
``max_restarts=0`` and this loop does the recovery: a call whose actor died goes back to the
front of the queue for a live actor, and a replacement actor is started; it joins the pool once
it answers a ping (on a node that has room, e.g. one that joined the cluster later). Calls that
fail inside the actor (the user's code raised) are not retried: they go to ``on_error``.

Example:
    >>> import ray                                                   # doctest: +SKIP
    >>> Sq = ray.remote(num_cpus=1, max_restarts=0)(SquareActor)     # doctest: +SKIP
    >>> dispatch(Sq.remote, [Sq.remote()], [1, 2, 3],                 # doctest: +SKIP
    ...          call=lambda a, x: a.square.remote(x), on_result=print)
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")
log = logging.getLogger("autocomp.workers")


def actor_lost(e: BaseException) -> bool:
    """Whether ``e`` says the actor or its node died (retry elsewhere), not that the call raised."""
    import ray.exceptions as rex

    lost = tuple(getattr(rex, n) for n in ("RayActorError", "ActorUnavailableError", "WorkerCrashedError",
                                           "NodeDiedError", "ObjectLostError", "OwnerDiedError")
                 if hasattr(rex, n))
    return isinstance(e, lost)


def dispatch(make_actor: Callable[[], Any], actors: Sequence[Any], items: Sequence[T],
             call: Callable[[Any, T], Any], on_result: Callable[[T, Any], None],
             on_error: Callable[[T, BaseException], None] | None = None,
             key: Callable[[T], str] = str, max_lost: int = 3, spawn_timeout: float = 300.0) -> list[Any]:
    """Run ``call(actor, item)`` for every item, one call in flight per actor.

    Args:
        make_actor: starts one replacement actor (``ActorClass.remote`` with its arguments).
        actors: the starting pool (may still be initialising).
        items: work items, submitted in order.
        call: submits one item to one actor and returns the ObjectRef.
        on_result: ``(item, value)`` as each call lands, in completion order.
        on_error: ``(item, exception)`` for a call that raised, or whose actor died ``max_lost``
            times (the item itself probably kills it); without it such errors are raised.
        key: an item's identity in messages.
        max_lost: deaths of an item's actor before that item is given up.
        spawn_timeout: seconds to wait for a replacement when no actor is left alive.

    Returns:
        The live actors at the end (the caller kills or reuses them).
    """
    import ray

    idle: deque[Any] = deque(actors)
    queue: deque[T] = deque(items)
    inflight: dict[Any, tuple[Any, T]] = {}
    spawning: dict[Any, Any] = {}      # ping ref -> replacement actor
    lost: dict[str, int] = {}
    spawned: list[Any] = []
    failed_spawns = 0                   # in a row: a constructor that always dies must not loop
    starved_since: float | None = None
    ok = False

    def fail(item: T, e: BaseException) -> None:
        if on_error is None:
            raise e
        on_error(item, e)

    def respawn() -> None:
        a = make_actor()
        spawned.append(a)
        spawning[a.ping.remote()] = a

    try:
        while queue or inflight:
            while queue and idle:
                a = idle.popleft()
                item = queue.popleft()
                inflight[call(a, item)] = (a, item)
            if not inflight and not spawning:
                if failed_spawns >= max_lost:
                    err = RuntimeError(f"{failed_spawns} replacement actors in a row died while starting")
                    while queue:
                        fail(queue.popleft(), err)
                    break
                respawn()  # every actor died and no replacement is on its way
            waiting = list(inflight) + list(spawning)
            done, _ = ray.wait(waiting, num_returns=1, timeout=10.0)
            if not done:
                if inflight:
                    starved_since = None
                    continue
                starved_since = starved_since or time.monotonic()
                if time.monotonic() - starved_since > spawn_timeout:
                    err = RuntimeError(f"no Ray worker could start an evaluator for {spawn_timeout:.0f} s "
                                       "(every node with a free CPU died?)")
                    while queue:
                        fail(queue.popleft(), err)
                continue
            ref = done[0]
            if ref in spawning:
                a = spawning.pop(ref)
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a replacement that cannot start is retried
                    if not actor_lost(e):
                        raise
                    failed_spawns += 1
                    if failed_spawns >= max_lost and not idle and not inflight:
                        while queue:
                            fail(queue.popleft(), e)
                    elif failed_spawns < max_lost:
                        respawn()
                else:
                    idle.append(a)
                    failed_spawns = 0
                    starved_since = None
                continue
            a, item = inflight.pop(ref)
            try:
                value = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - sorted into lost actors and failed calls
                if actor_lost(e):
                    k = key(item)
                    lost[k] = lost.get(k, 0) + 1
                    if lost[k] >= max_lost:
                        fail(item, e)
                    else:
                        queue.appendleft(item)
                        log.warning("worker lost while evaluating %s (%s): re-queued on a live worker, "
                                    "starting a replacement", k, type(e).__name__)
                    respawn()
                    continue
                fail(item, e)
            else:
                on_result(item, value)
            idle.append(a)
        ok = True
    finally:
        # Replacements still starting are not wanted; on an error nothing started here is kept.
        for a in (spawned if not ok else spawning.values()):
            _kill(a)
    return list(idle)


def _kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - already dead: nothing to release
        pass
