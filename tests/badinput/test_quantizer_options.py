"""Bad ``autocomp search --quantizer`` input: one ``error:`` line, exit code 2, before the database
is written (or created), with the helpers and the good study of ``test_cli_bad_input.py``."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_bad_input_helpers", Path(__file__).with_name("test_cli_bad_input.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)

bad = _helpers.bad            # the fixture: the good study's database and the case paths
SEARCH = _helpers.SEARCH      # search --study first --db {db}
NEW = ["search", "--db", "{dir}/quantizer.db"]

# (id, argv, substring of the error line, paths that must not exist afterwards)
CASES = [
    ("unknown", [*SEARCH, "--quantizer", "nope"], "unknown quantizer 'nope'", ()),
    ("unknown-new-db", [*NEW, "--quantizer", "nope"], "unknown quantizer 'nope'", ("{dir}/quantizer.db",)),
    ("empty", [*SEARCH, "--quantizer", " "], "non-empty", ()),
    ("composition-empty-part", [*SEARCH, "--quantizer", "gptq+"], "empty part after '+'", ()),
    ("composition-two-bases", [*SEARCH, "--quantizer", "rtn+gptq"], "must come first", ()),
    ("composition-twice", [*SEARCH, "--quantizer", "gptq+bias_correction+bias_correction"], "appears twice", ()),
    ("composition-unknown-part", [*NEW, "--quantizer", "gptq+nope"], "unknown quantizer 'nope'",
     ("{dir}/quantizer.db",)),
    ("option-unknown", [*SEARCH, "--quantizer", "gptq(colour=1)"], "has no option 'colour'", ()),
    ("option-bad-value", [*NEW, "--quantizer", "gptq(damp=-1)"], "damp", ("{dir}/quantizer.db",)),
    ("option-unreadable", [*SEARCH, "--quantizer", "gptq(act_order="], "cannot read", ()),
    ("option-not-literal", [*SEARCH, "--quantizer", "gptq(damp=__import__)"], "gptq", ()),
    ("absmax-takes-no-option", [*SEARCH, "--quantizer", "absmax(clip=True)"], "has no option 'clip'", ()),
    ("gptq-clip-not-bool", [*NEW, "--quantizer", "gptq(clip=1)"], "clip must be true or false", ("{dir}/quantizer.db",)),
    # the good study was evaluated with rtn: another quantizer is refused (after loading the model)
    ("resume-other-quantizer", [*SEARCH, "--quantizer", "gptq"], "evaluated with quantizer 'rtn', not 'gptq'", ()),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_quantizer_is_one_line_exit_2(case, bad, capfd, tmp_path, monkeypatch):
    name, argv, expect, absent = case
    monkeypatch.chdir(tmp_path)   # a stray default ./autocomp.db would land here
    before = _helpers.rows(Path(bad["db"]))
    code, out, err = _helpers.run_cli([_helpers._fill(a, bad) for a in argv], capfd)
    text = out + err
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in text, text
    assert expect in errors[0], errors[0]
    assert err.strip().splitlines()[-1] == errors[0], err
    assert _helpers.rows(Path(bad["db"])) == before      # the good study is untouched
    for p in absent:
        assert not Path(_helpers._fill(p, bad)).exists(), p
    assert not (tmp_path / "autocomp.db").exists()
