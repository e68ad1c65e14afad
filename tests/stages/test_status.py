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
