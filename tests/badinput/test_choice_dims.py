"""Bad input in the two choice dimensions of a search space (``act``: per-token inputs,
``quantizer``: per-layer quantizers): one ``error:`` line, exit code 2, before the database is
written (or created), with the helpers and the good study of ``test_cli_bad_input.py``."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_bad_input_helpers", Path(__file__).with_name("test_cli_bad_input.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)

bad = _helpers.bad            # the fixture: the good study's database and the case paths
SEARCH = _helpers.SEARCH      # search --study first --db {db}
NEW = ["search", "--db", "{dir}/dims.db"]

SPACES = {
    "act_unknown": "name: a\nw_bits: [4, 8]\na_bits: [8]\nact: [tensor, dynamic]\n",
    "act_override_unknown": "name: a\nw_bits: [4]\noverrides:\n  - match: \"@first\"\n    act: [row]\n",
    "act_key_unknown": "name: a\nchoices: [w4a8x]\n",
    "act_token_only_on_convs": "name: a\nchoices: [w4a8t]\n",
    "quantizer_unknown": "name: q\nw_bits: [4, 8]\nquantizer: [rtn, gptqq]\n",
    "quantizer_override_unknown": "name: q\nw_bits: [4]\noverrides:\n  - match: \"@last\"\n    quantizer: [nope]\n",
    "quantizer_key_unknown": "name: q\nchoices: [w4a8@nope, w8a8]\n",
    "quantizer_malformed": "name: q\nw_bits: [4]\nquantizer: [\"gptq(\"]\n",
}

# (id, space, substring of the error line, whether it is found before a new database is created:
# every error but one needs only the space file; "no token axis" needs the model's layers)
CASES = [
    ("act-unknown", "act_unknown", "'act' has 'dynamic'", True),
    ("act-override-unknown", "act_override_unknown", "overrides[0].act' has 'row'", True),
    ("act-key-unknown", "act_key_unknown", "'w4a8x'", True),
    ("act-token-only-on-convs", "act_token_only_on_convs", "no token axis", False),
    ("quantizer-unknown", "quantizer_unknown", "unknown quantizer 'gptqq'", True),
    ("quantizer-override-unknown", "quantizer_override_unknown", "unknown quantizer 'nope'", True),
    ("quantizer-key-unknown", "quantizer_key_unknown", "unknown quantizer 'nope'", True),
    ("quantizer-malformed", "quantizer_malformed", "'quantizer' has 'gptq('", True),
]


PARAMS = [(c, a) for c in CASES for a in ((SEARCH, NEW) if c[3] else (SEARCH,))]


@pytest.mark.parametrize(("case", "argv"), PARAMS,
                         ids=[f"{c[0]}-{'new-db' if a is NEW else 'existing-study'}" for c, a in PARAMS])
def test_bad_choice_dimension_is_one_line_exit_2(case, argv, bad, capfd, tmp_path, monkeypatch):
    name, space, expect, _ = case
    monkeypatch.chdir(tmp_path)   # a stray default ./autocomp.db would land here
    path = tmp_path / f"{space}.yaml"
    path.write_text(SPACES[space])
    before = _helpers.rows(Path(bad["db"]))
    code, out, err = _helpers.run_cli([*(_helpers._fill(a, bad) for a in argv), "--space", str(path)], capfd)
    text = out + err
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in text, text
    assert expect in errors[0], errors[0]
    assert _helpers.rows(Path(bad["db"])) == before      # the good study is untouched
    assert not Path(_helpers._fill("{dir}/dims.db", bad)).exists()
    assert not (tmp_path / "autocomp.db").exists()
