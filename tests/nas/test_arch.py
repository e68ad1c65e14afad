"""The architecture part of a policy and the NAS builders: ids, versions, shapes, the NAS spaces."""
from __future__ import annotations

import pytest
import torch

from autocomp.arch import Architecture, check_model_export
from autocomp.errors import AutocompError, SearchSpaceError, VersionError
from autocomp.nas_models import build, candidate_costs, candidate_policy, check_nas, profile_candidate
from autocomp.policy import Choice, Policy
from autocomp.search_spaces import load_space, space_from_dict

CNN = Architecture.make("digits-cnn", {"stem": 8}, [{"op": "conv", "kernel": 3, "width": 1},
                                                   {"op": "dwsep", "kernel": 5, "width": 0.5}])


def test_no_architecture_leaves_policy_ids_and_dicts_unchanged(digits_layers):
    names = [l.name for l in digits_layers]
    pol = Policy.uniform(names, Choice(4, 8))
    # the id of every policy written before architectures existed: the hash of the layer list only
    import hashlib
    import json
    blob = json.dumps([[n, c.to_dict()] for n, c in pol.layers], sort_keys=True)
    assert pol.id == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert set(pol.to_dict()) == {"version", "id", "layers"}
    assert Policy.from_dict(pol.to_dict()).arch is None and Policy.from_dict(pol.to_dict()) == pol
    with_arch = Policy.from_choices(pol.layers, arch=CNN)
    assert with_arch.id != pol.id and with_arch.to_dict()["arch"]["family"] == "digits-cnn"
    other = Policy.from_choices(pol.layers, arch=Architecture.make("digits-cnn", {"stem": 16}, [{"op": "conv"}]))
    assert other.id != with_arch.id
    back = Policy.from_json(with_arch.to_json())
    assert back == with_arch and back.id == with_arch.id and back.arch.key == CNN.key


def test_architecture_from_dict_checks_its_version_and_form():
    d = CNN.to_dict()
    with pytest.raises(VersionError, match="Architecture version 2 is newer"):
        Architecture.from_dict({**d, "version": 2})
    with pytest.raises(VersionError, match="older"):
        Architecture.from_dict({**d, "version": 0})
    with pytest.raises(ValueError, match="number or a word"):
        Architecture.make("digits-cnn", {}, [{"op": [1, 2]}])
    # the canonical key ignores the order settings are given in and 1.0 vs 1
    assert Architecture.make("digits-cnn", {"stem": 8}, [{"width": 1.0, "kernel": 3, "op": "conv"},
                                                        {"width": 0.5, "op": "dwsep", "kernel": 5}]).key == CNN.key


def test_cnn_builder_shapes_and_parameters():
    model = build(CNN)
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    # stem 1->8 3x3; block 0 plain 8->16 3x3; block 1 depthwise 5x5 on 16, pointwise 16->16 (0.5 x 32); head 16->10
    assert shapes == {"stem": (8, 1, 3, 3), "blocks.0.conv": (16, 8, 3, 3), "blocks.1.dw": (16, 1, 5, 5),
                      "blocks.1.pw": (16, 16, 1, 1), "head": (10, 16)}
    bn = 2 * (8 + 16 + 16)
    assert sum(p.numel() for p in model.parameters()) == 72 + 1152 + 400 + 256 + 170 + bn
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_vit_builder_shapes_and_rejections():
    arch = Architecture.make("digits-vit", {"dim": 16}, [{"heads": 2, "mlp": 4}, {"heads": 4, "mlp": 1}])
    model, layers = profile_candidate(arch)
    assert [l.name for l in layers] == ["embed", "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.fc1",
                                        "blocks.0.fc2", "blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.fc1",
                                        "blocks.1.fc2", "head"]
    sizes = {l.name: l.weight_shape for l in layers}
    assert sizes["blocks.0.fc1"] == (64, 16) and sizes["blocks.1.fc1"] == (16, 16) and sizes["embed"] == (16, 4)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(AutocompError, match="3 heads, which do not divide dim 16"):
        build(Architecture.make("digits-vit", {"dim": 16}, [{"heads": 3, "mlp": 2}]))
    with pytest.raises(AutocompError, match="kernel must be odd"):
        build(Architecture.make("digits-cnn", {}, [{"op": "conv", "kernel": 4, "width": 1}]))


def test_candidate_policy_bits_per_block_and_costs_from_the_candidate():
    sp = load_space("nas_digits")
    model, layers = profile_candidate(CNN)
    pol = candidate_policy(CNN, layers, [2, 6], sp)
    assert pol.arch == CNN
    assert {n: c.w_bits for n, c in pol.layers} == {"stem": 8, "blocks.0.conv": 2, "blocks.1.dw": 6,
                                                    "blocks.1.pw": 6, "head": 8}
    costs = candidate_costs(model, layers, pol, full_size=False)
    w = {l.name: l.params for l in layers}
    bits = 8 * w["stem"] + 2 * w["blocks.0.conv"] + 6 * (w["blocks.1.dw"] + w["blocks.1.pw"]) + 8 * w["head"]
    assert costs["avg_bits"] == pytest.approx(bits / sum(w.values()))
    assert costs["size"] > bits / 8      # plus the float biases, norms and scales


def test_nas_spaces_load_and_the_loader_checks_the_section():
    for name, family in (("nas_digits", "digits-cnn"), ("nas_vit", "digits-vit")):
        assert load_space(name).nas["family"] == family
    assert load_space("mixed_precision").nas is None
    assert "nas" not in load_space("mixed_precision").to_dict()
    with pytest.raises(SearchSpaceError, match="'nas.block.op' must be a non-empty list"):
        space_from_dict({"w_bits": [4], "nas": {"family": "digits-cnn", "depth": [2], "block": {"op": []}}})
    with pytest.raises(SearchSpaceError, match="bits come from w_bits"):
        space_from_dict({"w_bits": [4], "nas": {"family": "digits-cnn", "depth": [2], "block": {"bits": [4]}}})


def test_check_nas_and_model_exports_of_a_nas_policy():
    assert check_nas("digits") == ("digits-cnn", "nas_digits") and check_nas("digits-vit")[0] == "digits-vit"
    for spec in ("tiny-lm", "my_models.py:make"):
        with pytest.raises(AutocompError, match="needs an architecture builder"):
            check_nas(spec)
    check_model_export(Policy.from_choices({"fc": Choice(4, 8)}), "checkpoint")   # no architecture: allowed
    with pytest.raises(AutocompError, match="--format checkpoint cannot be written; export it with --format policy"):
        check_model_export(Policy.from_choices({"fc": Choice(4, 8)}, arch=CNN), "checkpoint")
