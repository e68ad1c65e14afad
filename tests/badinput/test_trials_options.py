"""Bad ``--trials`` options: one ``error:`` line, exit 2, before any database is created or Ray
started (a fresh ``--db`` path that must not exist afterwards)."""
from __future__ import annotations

import pytest

CASES = [
    ("unknown-trials", ["--trials", "nope"], "unknown --trials 'nope'"),
    ("top-without-trials", ["--top", "2"], "--top applies only with --trials"),
    ("qat-without-trials", ["--qat", "epochs=1"], "--qat applies only with --trials"),
    ("per-policy-without-trials", ["--trials-per-policy", "2"], "--trials-per-policy applies only with --trials"),
    ("steps-without-trials", ["--trial-steps", "5"], "--trial-steps applies only with --trials"),
    ("nas-samples-without-trials", ["--nas-samples", "4"], "--nas-samples applies only with --trials"),
    ("retries-without-trials", ["--trial-retries", "3"], "--trial-retries applies only with --trials"),
    ("top-0", ["--trials", "qat", "--top", "0"], "--top must be at least 1"),
    ("per-policy-0", ["--trials", "qat", "--trials-per-policy", "0"], "--trials-per-policy must be at least 1"),
    ("steps-0", ["--trials", "qat", "--trial-steps", "0"], "--trial-steps must be at least 1"),
    ("retries-negative", ["--trials", "qat", "--trial-retries", "-1"], "--trial-retries must be 0 or more"),
    ("qat-not-key-value", ["--trials", "qat", "--qat", "epochs"], "is not key=value"),
    ("qat-twice", ["--trials", "qat", "--qat", "epochs=1,epochs=2"], "'epochs' is given twice"),
    ("qat-unknown-option", ["--trials", "qat", "--qat", "epohcs=1"], "evaluator 'qat' has no option 'epohcs'"),
    ("qat-bad-value", ["--trials", "qat", "--qat", "epochs=-1"], "epochs"),
    ("qat-bad-lr", ["--trials", "qat", "--qat", "lr=fast"], "lr"),
    ("steps-disagree", ["--trials", "qat", "--qat", "steps=5", "--trial-steps", "6"], "disagree"),
    ("nas-samples-with-qat", ["--trials", "qat", "--nas-samples", "3"], "--nas-samples applies to --trials nas"),
    ("top-with-nas", ["--trials", "nas", "--nas-samples", "3", "--top", "2"], "--top applies to --trials qat"),
    ("nas-without-samples", ["--trials", "nas"], "--trials nas needs --nas-samples"),
    ("qat-device-option", ["--trials", "qat", "--qat", "device=cuda"], "device is not a trial option: use --device"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_trials_option_is_one_line_exit_2(case, capfd, tmp_path, monkeypatch):
    from autocomp.cli import main

    name, extra, expect = case
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "new.db"
    with pytest.raises(SystemExit) as exc:
        main(["search", "--study", "t", "--db", str(db), *extra])
    out, err = capfd.readouterr()
    errors = [l for l in (out + err).splitlines() if l.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1 and "Traceback" not in out + err, out + err
    assert expect in errors[0], errors[0]
    assert not db.exists() and not (tmp_path / "autocomp.db").exists()


# -- the same options given on resume: the existing study's rows do not change ---------------------
ON_RESUME = ("unknown-trials", "top-without-trials", "qat-unknown-option", "qat-bad-value", "steps-disagree",
             "top-with-nas", "nas-without-samples", "qat-device-option")
RESUME_CASES = [c for c in CASES if c[0] in ON_RESUME]
TABLES = ("autocomp_studies", "autocomp_policies", "autocomp_evaluations")


def _rows(db) -> dict[str, list[str]]:
    """Every row of the study's tables, as SQL, table by table."""
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        dump = list(conn.iterdump())
    return {t: [l for l in dump if l.startswith(f'INSERT INTO "{t}"')] for t in TABLES}


@pytest.fixture(scope="module")
def existing(tmp_path_factory, ray_session):
    """A study made by a real (small) search: one budget point of digits, then its database bytes."""
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store

    db = tmp_path_factory.mktemp("trials-resume") / "study.db"
    store = Store(f"sqlite:///{db}")
    run_search(SearchConfig(model="digits", budget="size<=25%", points=1, workers=1), store, "t")
    store.dispose()
    return db


def test_resume_cases_are_known():
    assert len(RESUME_CASES) == len(ON_RESUME)


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_bad_trials_option_on_resume_leaves_the_study_unchanged(case, existing, capfd, tmp_path, monkeypatch):
    from autocomp.cli import main

    name, extra, expect = case
    monkeypatch.chdir(tmp_path)
    before, raw = _rows(existing), existing.read_bytes()
    assert all(before[t] for t in TABLES)                    # the study has rows in each table
    with pytest.raises(SystemExit) as exc:
        main(["search", "--study", "t", "--db", str(existing), *extra])
    out, err = capfd.readouterr()
    errors = [l for l in (out + err).splitlines() if l.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1 and "Traceback" not in out + err, out + err
    assert expect in errors[0], errors[0]
    assert _rows(existing) == before and existing.read_bytes() == raw   # not a byte changed
    assert not (tmp_path / "autocomp.db").exists()
