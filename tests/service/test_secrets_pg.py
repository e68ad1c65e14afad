"""A PostgreSQL password never reaches output or Ray Tune's state files, on success or failure.

The test server trusts local connections, so a URL may carry any password and still connect: the
searches below really run against PostgreSQL with a password in their ``--db``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.refine import optuna_storage
from autocomp.store.sealed import SealedURL

PW = "s3cr3t-pw-7f1c"
runner = CliRunner()


def _with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PW}@", 1)


def _files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_search_with_qat_refinement_leaks_no_password(ray_session, pg_url, tmp_path, monkeypatch, capfd):
    tune = tmp_path / "tune"
    monkeypatch.setenv("AUTOCOMP_TUNE_DIR", str(tune))
    url = _with_password(pg_url)
    r = runner.invoke(app, ["search", "--db", url, "--study", "pw", "--points", "2", "--refine", "1",
                            "--refine-mode", "qat", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "***@" in r.output                                  # the URL is shown, masked
    pickles = list(tune.rglob("*.pkl"))
    assert any(p.name.startswith("searcher-state") for p in pickles) and any(p.name == "tuner.pkl" for p in pickles)
    assert _files_holding(tune, PW) == []
    # the same run's study is readable, and the failing command below sees it
    bad = runner.invoke(app, ["search", "--db", url, "--study", "pw", "--points", "0"])
    assert bad.exit_code == 2 and "error:" in bad.output
    gone = runner.invoke(app, ["front", "show", "pw", "--db", url.rsplit("/", 1)[0] + "/no_such_db"])
    assert gone.exit_code == 2 and "***@" in gone.output
    captured = capfd.readouterr()
    for text in (r.output, bad.output, gone.output, captured.out, captured.err):
        assert PW not in text


def test_sealed_values_pickle_without_the_password_and_reopen_in_this_process(pg_url):
    url = _with_password(pg_url)
    blob = pickle.dumps(SealedURL(url))
    assert PW.encode() not in blob and pickle.loads(blob).url == url
    storage = optuna_storage(url)
    storage.get_all_studies()                                  # a working connection before and after
    blob = pickle.dumps(storage)
    assert PW.encode() not in blob
    assert pickle.loads(blob).get_all_studies() == []
