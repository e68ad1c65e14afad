"""Bad input to ``front export --format ...``: one ``error:`` line, exit 2, nothing half-written.

Every case runs the real entry point on the stored digits study ``first`` (a copy of the store
fixture) and checks the output it names: absent, or, when it existed, exactly as it was.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FIXTURE_DB = Path(__file__).resolve().parents[1] / "store" / "fixtures" / "pre_alembic.db"
GOOD, POLICY = "first", "2cd4"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    from autocomp.store import Store

    path = tmp_path_factory.mktemp("export_bad") / "good.db"
    shutil.copy(FIXTURE_DB, path)
    Store(str(path)).dispose()
    return str(path)


def run_cli(argv: list[str], capfd) -> tuple[int, str]:
    from autocomp.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capfd.readouterr()
    return exc.value.code, out + err


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_error(code: int, text: str, expect: str) -> None:
    assert "Traceback" not in text, text
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], text


def export(db: str, out: Path, *extra: str, policy: str = POLICY) -> list[str]:
    return ["front", "export", GOOD, policy, "--format", "checkpoint", "-o", str(out), "--db", db, *extra]


def test_unknown_format(db, tmp_path, capfd):
    out = tmp_path / "ck"
    code, text = run_cli(["front", "export", GOOD, POLICY, "--format", "tarball", "-o", str(out), "--db", db], capfd)
    one_error(code, text, "unknown export format 'tarball'")
    assert "checkpoint" in text and not out.exists() and list(tmp_path.iterdir()) == []


def test_policy_not_in_study(db, tmp_path, capfd):
    out = tmp_path / "ck"
    one_error(*run_cli(export(db, out, policy="ffff"), capfd), "has no policy 'ffff'")
    assert list(tmp_path.iterdir()) == []


def test_non_empty_directory_is_refused_without_force(db, tmp_path, capfd):
    out = tmp_path / "ck"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_error(*run_cli(export(db, out), capfd), "pass --force")
    assert tree(out) == {"keep.txt": b"mine"} and sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_output_is_a_file(db, tmp_path, capfd):
    out = tmp_path / "ck"
    out.write_text("a file")
    one_error(*run_cli(export(db, out), capfd), "is not a directory")
    assert out.read_text() == "a file"


def test_parent_missing(db, tmp_path, capfd):
    out = tmp_path / "no" / "such" / "ck"
    one_error(*run_cli(export(db, out), capfd), "does not exist")
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_parent_not_writable(db, tmp_path, capfd):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error(*run_cli(export(db, ro / "ck"), capfd), "is not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_missing_optional_package_names_the_extra(db, tmp_path, capfd):
    """A format needing a package that is not installed fails before anything is loaded or written."""
    from autocomp.export import _FORMATS, ExportFormat, register_format

    register_format(ExportFormat("needs_pkg", "autocomp.export.checkpoint:write_checkpoint", "test",
                                 requires={"autocomp_no_such_package": "nopkg"}))
    try:
        out = tmp_path / "ck"
        code, text = run_cli(["front", "export", GOOD, POLICY, "--format", "needs_pkg", "-o", str(out), "--db", db], capfd)
        one_error(code, text, "needs autocomp_no_such_package, which is not installed: pip install 'autocomp[nopkg]'")
        assert list(tmp_path.iterdir()) == []
    finally:
        _FORMATS.unregister("needs_pkg")


def test_stored_file_model_needs_consent(db, tmp_path, capfd):
    """A stored ``file.py:`` spec is not imported for an export unless the user says so."""
    import sqlite3

    db2 = tmp_path / "file_model.db"
    shutil.copy(db, db2)
    with sqlite3.connect(db2) as conn:
        conn.execute("UPDATE autocomp_studies SET config = json_set(config, '$.model', ?) WHERE name = ?",
                     (str(tmp_path / "evil.py") + ":make", GOOD))
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n")
    out = tmp_path / "ck"
    one_error(*run_cli(export(str(db2), out), capfd), "--trust-stored-model")
    assert not out.exists() and not (tmp_path / "ran").exists()


def test_failed_writer_leaves_no_output(db, tmp_path, capfd, monkeypatch):
    """A writer that fails half way (a quantizer whose weights no codes express) leaves no directory
    behind, and an existing output is kept as it was even with --force."""
    import torch

    from autocomp.quantizers import LayerResult, _REGISTRY, Quantizer, register

    class Noisy(Quantizer):
        name = "noisy_for_test"

        def quantize_layer(self, name, module, choice, stats):
            from autocomp.modules import weight_of

            return LayerResult(weight_of(module).detach() + 1e-3 * torch.randn_like(weight_of(module)))

    register(Noisy)
    import sqlite3

    db2 = tmp_path / "noisy.db"
    shutil.copy(db, db2)
    with sqlite3.connect(db2) as conn:
        conn.execute("UPDATE autocomp_studies SET config = json_set(config, '$.quantizer', 'noisy_for_test') "
                     "WHERE name = ?", (GOOD,))
    out = tmp_path / "ck"
    out.mkdir()
    (out / "old.txt").write_text("old")
    try:
        one_error(*run_cli(export(str(db2), out, "--force"), capfd), "not representable")
    finally:
        _REGISTRY.unregister("noisy_for_test")
    assert tree(out) == {"old.txt": b"old"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ck")] == []   # no temporary left
