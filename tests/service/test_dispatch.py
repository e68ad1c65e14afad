"""The fault-tolerant actor loop on the suite's real local Ray: a worker process that dies has its
call re-queued on a live actor and is replaced; a call that raises is reported, not retried; an
item that kills every actor it meets is given up after ``max_lost`` deaths."""
from __future__ import annotations

from pathlib import Path

from autocomp.workers.dispatch import dispatch


def _actor_class(ray):
    # Defined in a function so Ray ships the class by value (tests are not importable on workers).
    class Squarer:
        def ping(self) -> bool:
            return True

        def square(self, x: int, marker: str) -> int:
            import os

            if x == 3 and not Path(marker).exists():
                Path(marker).touch()
                os._exit(1)               # the worker process dies mid-call, once
            if x == 5:
                raise ValueError("bad item")
            if x == 7:
                os._exit(1)               # this item kills every actor it runs on
            return x * x

    return ray.remote(num_cpus=0, max_restarts=0)(Squarer)


def test_dead_actors_are_replaced_and_their_calls_retried(ray_session, tmp_path):
    ray = ray_session
    Squarer = _actor_class(ray)
    marker = str(tmp_path / "died-once")
    results, errors = {}, {}
    made = []

    def make():
        made.append(Squarer.remote())
        return made[-1]

    live = dispatch(make, [Squarer.remote(), Squarer.remote()], list(range(9)),
                    call=lambda a, x: a.square.remote(x, marker),
                    on_result=lambda x, v: results.__setitem__(x, v),
                    on_error=lambda x, e: errors.__setitem__(x, type(e).__name__), max_lost=2)
    try:
        assert results == {x: x * x for x in range(9) if x not in (5, 7)}   # 3 was retried after its death
        assert sorted(errors) == [5, 7]
        assert "ValueError" in errors[5]                                     # raised: reported at once
        assert Path(marker).exists()
        assert len(made) >= 3                  # one replacement per death: 3 once, 7 twice
        assert all(ray.get([a.ping.remote() for a in live]))                # survivors are alive
    finally:
        for a in [*live, *made]:
            ray.kill(a)
