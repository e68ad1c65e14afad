"""A study's status, kept by one context manager: ``running`` inside, and on the way out ``done``,
``incomplete`` (some evaluations failed; stored results kept), ``interrupted`` (Ctrl-C, SIGTERM)
or ``failed`` (anything else), with the reason and the command that resumes it.

A library caller whose search raises never leaves a study ``running``.

An interrupt can be lost on its way up: a ``KeyboardInterrupt`` raised inside a database driver's
cleanup (psycopg resetting a connection during SQLAlchemy's pre-ping) comes out as a database
error. The CLI records each SIGINT/SIGTERM with :func:`note_signal`; once one arrived, whatever
ends the block ends it as ``interrupted``, on fresh connections.

Example:
    >>> from autocomp.store import Store
    >>> from autocomp.stages.status import tracked
    >>> store = Store("sqlite://")
    >>> study, _ = store.open_study("demo", {})
    >>> with tracked(store, study, resume="autocomp search --study demo"):
    ...     pass
    >>> store.get_study("demo").status
    'done'
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from autocomp.errors import AutocompError
from autocomp.store import Store
from autocomp.store.repository import StudyInfo


SIGNALS: list[int] = []   # SIGINT/SIGTERM numbers received by this process (see note_signal)


def note_signal(signum: int) -> None:
    """Record that the user (or a scheduler) asked this process to stop."""
    SIGNALS.append(signum)


def check_signals() -> None:
    """Raise ``KeyboardInterrupt`` when a signal was recorded: called between units of work, so
    an interrupt something swallowed on its way up still stops the run at the next one."""
    if SIGNALS:
        raise KeyboardInterrupt(f"signal {SIGNALS[0]}")


class IncompleteRun(AutocompError):
    """Some work items failed; what landed is stored and a re-run retries only the rest."""


@contextmanager
def tracked(store: Store, study: StudyInfo, resume: str = "") -> Iterator[StudyInfo]:
    """Mark ``study`` running for the block; record how it ended (see the module doc).

    Args:
        resume: the command that resumes the study, stored with a non-``done`` status and
            appended to the message of an :class:`IncompleteRun`.
    """
    store.set_status(study, "running")
    try:
        yield study
    except IncompleteRun as e:
        if SIGNALS:
            _interrupted(store, study, resume, e)
        _end(store, study, "incomplete", str(e), resume)
        raise IncompleteRun(f"{e}: run `{resume}` again to retry them" if resume else str(e)) from e.__cause__
    except (KeyboardInterrupt, SystemExit) as e:
        if SIGNALS:
            store.dispose()   # the connection the signal hit may be unusable
        _end(store, study, "interrupted", type(e).__name__, resume)
        raise
    except BaseException as e:
        if SIGNALS:
            _interrupted(store, study, resume, e)
        _end(store, study, "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", resume)
        raise
    else:
        if SIGNALS:   # asked to stop, and the interrupt was swallowed: not a finished run
            _end(store, study, "interrupted", f"signal {SIGNALS[0]}", resume)
            raise KeyboardInterrupt(f"signal {SIGNALS[0]}")
        _end(store, study, "done", "", "")


def _interrupted(store: Store, study: StudyInfo, resume: str, e: BaseException) -> None:
    """A signal arrived and ``e`` came out instead (the interrupt was lost in a driver): an
    interruption all the same, not a failure of the search."""
    store.dispose()   # the connection the interrupt hit may be unusable
    _end(store, study, "interrupted", f"signal {SIGNALS[0]}", resume)
    raise KeyboardInterrupt(f"signal {SIGNALS[0]}") from e


def _end(store: Store, study: StudyInfo, status: str, reason: str, resume: str) -> None:
    try:
        store.set_status(study, status)
        store.update_config(study, status_reason=reason[:500], resume_command=resume)
    except Exception:  # noqa: BLE001 - an unreachable database must not hide the original error
        pass
