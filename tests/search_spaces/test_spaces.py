"""Built-in spaces, the validator's messages, overrides and ties, on the real digits profile."""
from __future__ import annotations

import pytest

from autocomp.errors import SearchSpaceError
from autocomp.search_spaces import builtin_spaces, load_space, space_from_dict


def test_builtins_present_and_valid(digits_layers):
    assert {"mixed_precision", "w4a8", "prune_quant", "binary"} <= set(builtin_spaces())
    for name in builtin_spaces():
        sp = load_space(name)
        ch = sp.choices(digits_layers)
        assert all(ch[l.name] for l in digits_layers), name


def test_binary_keeps_first_and_last_at_8_bits(digits_layers):
    sp = load_space("binary")
    ch = sp.choices(digits_layers)
    first, last = digits_layers[0].name, digits_layers[-1].name
    assert {c.w_bits for c in ch[first]} == {8} and {c.w_bits for c in ch[last]} == {8}
    middle = {c.w_bits for l in digits_layers[1:-1] for c in ch[l.name]}
    assert middle == {1, 1.58}


def test_prune_quant_is_joint(digits_layers):
    ch = load_space("prune_quant").choices(digits_layers)
    mid = ch[digits_layers[3].name]
    assert {c.prune for c in mid} == {0.0, 0.25, 0.5, 0.75}
    assert {c.w_bits for c in mid} == {2, 3, 4, 6, 8}
    assert len(mid) == 20
    assert all(c.prune == 0 for c in ch[digits_layers[0].name])


def test_w4a8(digits_layers):
    ch = load_space("w4a8").choices(digits_layers)
    assert {c.key for c in ch[digits_layers[2].name]} == {"w4a8", "w8a8"}


def test_load_from_file_and_skip(tmp_path, digits_layers):
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nw_bits: [4]\noverrides:\n  - match: 'classifier.*'\n    skip: true\n"
                 "  - match: 'classifier.1'\n    w_bits: [8]\n")
    sp = load_space(str(f))
    ch = sp.choices(digits_layers)
    for l in digits_layers:
        expect = {"w32a32"} if l.name.startswith("classifier.") else {"w4a8"}  # first match wins
        assert {c.key for c in ch[l.name]} == expect


@pytest.mark.parametrize("spec, key", [
    ({"w_bits": [4], "bits": [8]}, "'bits'"),
    ({"a_bits": [8]}, "'w_bits'"),
    ({"w_bits": [5.5]}, "'w_bits' has 5.5"),
    ({"w_bits": []}, "'w_bits' must be a non-empty list"),
    ({"w_bits": [4], "a_bits": [0]}, "'a_bits' has 0"),
    ({"w_bits": [4], "prune": [1.0]}, "'prune' has 1.0"),
    ({"w_bits": [4], "overrides": [{"w_bits": [8]}]}, "overrides[0] needs a 'match'"),
    ({"w_bits": [4], "overrides": [{"match": "x", "bitz": [8]}]}, "unknown key 'bitz'"),
    ({"w_bits": [4], "overrides": [{"match": "x", "w_bits": [9]}]}, "'overrides[0].w_bits' has 9"),
    ({"w_bits": [4], "overrides": [{"match": "x", "prune": [2]}]}, "'overrides[0].prune' has 2"),
    ({"w_bits": [4], "overrides": [{"match": "x", "skip": "yes"}]}, "overrides[0].skip must be true or false"),
    ({"w_bits": [4], "overrides": [{"match": "x", "skip": True, "w_bits": [8]}]}, "sets skip together"),
    ({"w_bits": [4], "overrides": {"match": "x"}}, "'overrides' must be a list"),
    ({"w_bits": [4], "ties": [["only_one"]]}, "ties[0] must be a list of at least two"),
    ({"w_bits": [4], "name": 3}, "'name' must be a string"),
])
def test_validator_names_the_bad_key(spec, key):
    with pytest.raises(SearchSpaceError) as e:
        space_from_dict(spec, where="t.yaml")
    assert key in str(e.value) and "t.yaml" in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(SearchSpaceError, match="unknown search space 'nope'.*prune_quant"):
        load_space("nope")
    f = tmp_path / "bad.yaml"
    f.write_text("w_bits: [4\n")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_space(str(f))


def test_ties_resolve_merge_and_fail_clearly(digits_layers):
    names = [l.name for l in digits_layers]
    sp = space_from_dict({"w_bits": [4, 8], "ties": [[names[1], names[2]], [names[2], names[3]], ["classifier.*"]]})
    groups = sp.tie_groups(digits_layers)
    assert [names[1], names[2], names[3]] in groups           # overlapping ties merge
    assert [n for n in names if n.startswith("classifier.")] in groups  # a pattern ties a family
    bad = space_from_dict({"w_bits": [4], "ties": [[names[0], "no.such.layer"]]}, where="b.yaml")
    with pytest.raises(SearchSpaceError, match="ties\\[0\\] names 'no.such.layer'"):
        bad.tie_groups(digits_layers)


def test_round_trip_to_dict():
    sp = load_space("prune_quant")
    again = space_from_dict(sp.to_dict())
    assert again == sp


def test_bind_keeps_first_and_last_on_a_subset(digits_layers):
    """Proxy tasks score a few layers at a time: @last must still mean the model's last layer."""
    sp = load_space("prune_quant").bind(digits_layers)
    part = digits_layers[1:4]
    ch = sp.choices(part)
    assert all(len(ch[l.name]) == 20 for l in part)          # none of them taken for @first/@last
    full = sp.choices(digits_layers)
    assert {c.w_bits for c in full[digits_layers[-1].name]} == {8}
    assert {c.w_bits for c in full[digits_layers[0].name]} == {8}
    again = space_from_dict(sp.to_dict())                       # what travels to the Ray task
    assert again.choices(part) == ch
