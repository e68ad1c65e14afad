"""One progress bar per pipeline stage (rich), or silence for library calls."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


class Stages:
    """Silent stage tracker; :class:`RichStages` draws bars."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        import time

        t0 = time.perf_counter()
        try:
            yield lambda n=1: None
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def log(self, msg: str) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


class RichStages(Stages):
    def __init__(self, console=None) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False)
        self.progress.start()

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(name, total=total or 1)
        with super().stage(name, total):
            yield lambda n=1: self.progress.advance(task, n)
        self.progress.update(task, completed=total or 1)

    def log(self, msg: str) -> None:
        self.progress.console.print(msg)

    def close(self, failed: bool = False) -> None:
        # On failure the bars vanish so the error is the one line the user reads.
        if failed:
            self.progress.live.transient = True
        self.progress.stop()
