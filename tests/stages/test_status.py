"""The study-status context: never left ``running``, whatever ends the block."""
from __future__ import annotations

import pytest

from autocomp.stages import IncompleteRun, tracked
from autocomp.store import Store


@pytest.fixture
def study(sqlite_url):
    store = Store(sqlite_url)
    st, _ = store.open_study("s", {"model": "digits"})
    return store, st


def test_done_when_the_block_ends(study):
    store, st = study
    with tracked(store, st, resume="autocomp search --study s"):
        assert store.get_study("s").status == "running"
    assert store.get_study("s").status == "done"
    assert store.get_study("s").config["status_reason"] == ""


def test_failed_with_the_reason(study):
    store, st = study
    with pytest.raises(ZeroDivisionError):
        with tracked(store, st, resume="autocomp search --study s"):
            1 / 0
    got = store.get_study("s")
    assert got.status == "failed"
    assert got.config["status_reason"].startswith("ZeroDivisionError")
    assert got.config["resume_command"] == "autocomp search --study s"


def test_interrupted(study):
    store, st = study
    with pytest.raises(KeyboardInterrupt):
        with tracked(store, st):
            raise KeyboardInterrupt
    assert store.get_study("s").status == "interrupted"


def test_incomplete_names_the_resume_command(study):
    store, st = study
    with pytest.raises(IncompleteRun, match="run `autocomp search --study s --refine 4` again to retry them"):
        with tracked(store, st, resume="autocomp search --study s --refine 4"):
            raise IncompleteRun("2 evaluation(s) failed (abc: RuntimeError); stored results are kept")
    assert store.get_study("s").status == "incomplete"


def test_an_interrupt_a_driver_swallows_still_ends_as_interrupted(study, monkeypatch):
    """CI saw it on PostgreSQL: Ctrl-C landed in SQLAlchemy's pre-ping, psycopg's cleanup raised
    "can't change 'autocommit' now" over the KeyboardInterrupt, and the search ended ``failed``
    with exit 2. A real SIGINT, through the CLI's handler, swallowed the same way here."""
    import os
    import signal
    import time

    from autocomp.cli.search import _record_signals
    from autocomp.stages import status
    from autocomp.errors import StoreError

    monkeypatch.setattr(status, "SIGNALS", [])
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    store, st = study
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a fresh CLI process
        restore = _record_signals()
        with pytest.raises(KeyboardInterrupt) as info:
            with tracked(store, st, resume="autocomp search --study s"):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(10)   # the handler runs here at the latest
                    raise AssertionError("SIGINT did not raise")
                except KeyboardInterrupt:
                    raise StoreError("database error on postgresql://u@h/db: can't change 'autocommit' now")
        restore()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # put back
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
    assert isinstance(info.value.__cause__, StoreError)
    got = store.get_study("s")
    assert got.status == "interrupted"
    assert got.config["status_reason"] == f"signal {int(signal.SIGINT)}"
    assert got.config["resume_command"] == "autocomp search --study s"


def test_without_a_signal_a_database_error_is_a_failure(study, monkeypatch):
    from autocomp.stages import status
    from autocomp.errors import StoreError

    monkeypatch.setattr(status, "SIGNALS", [])
    store, st = study
    with pytest.raises(StoreError):
        with tracked(store, st):
            raise StoreError("database error on sqlite:///x.db: disk I/O error")
    assert store.get_study("s").status == "failed"


def test_a_recorded_signal_stops_an_evaluation_sweep_at_the_next_result(tmp_path):
    """A signal something swallowed (recorded, but no exception came up): the sweep stops at the
    next stored evaluation and the study ends interrupted, not done."""
    from autocomp.budget import CostModel
    from autocomp.policy import Choice, Policy
    from autocomp.profile import profile_model
    from autocomp.stages import evaluate, tracked
    from autocomp.stages.status import SIGNALS, note_signal
    from autocomp.store import Store
    from autocomp.workload import load_workload

    wl = load_workload("digits")
    layers = profile_model(wl.model(), wl.sample_input())
    names = [l.name for l in layers]
    pols = [Policy.uniform(names, Choice(b, 8)) for b in (8, 6, 4, 3)]
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    study, _ = store.open_study("s", {"model": "digits"})
    cm = CostModel(layers)
    for p in pols:
        store.save_policy(study, p, "uniform", p.id, cm.costs(p))
    seen = []

    def tick(n=1):
        seen.append(n)
        if len(seen) == 1:
            note_signal(2)   # recorded, as the CLI's handler does, with no exception raised
    SIGNALS.clear()
    try:
        with pytest.raises(KeyboardInterrupt):
            with tracked(store, study, resume="autocomp search --study s"):
                evaluate(store, study, "digits", cm, pols, "ptq", workers=1, on_progress=tick)
    finally:
        SIGNALS.clear()
    st = store.get_study("s")
    assert st.status == "interrupted"
    assert 1 <= len(store.evaluated_ids(st)) < len(pols)
