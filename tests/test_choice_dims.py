"""Two choice dimensions: per-token dynamic input activations (``w4a8t``, issue 11) and the keys,
dicts and space fields of both it and the per-layer quantizer (``w4a8@gptq``, issue 12; its
numerics are in tests/quantizers/test_per_layer.py). Old keys and policy ids are unchanged."""
from __future__ import annotations

import pytest
import torch

from autocomp.errors import SearchSpaceError
from autocomp.modules import capture_inputs, call_model
from autocomp.policy import Choice, Policy, apply, input_range
from autocomp.profile import profile_model
from autocomp.quant import TOKEN_RANGE, choose_act_range, fake_quant_act, fake_quant_act_token
from autocomp.search_spaces import has_token_axis, load_space, space_from_dict


def test_keys_and_dicts_round_trip_and_defaults_are_omitted():
    plain = Choice(4, 8, 0.5, 128, True)
    assert plain.key == "w4a8p0.5g128z" and "act" not in plain.to_dict() and "quantizer" not in plain.to_dict()
    for c in (Choice(4, 8, act="token"), Choice(8, 4, 0.25, 64, True, act="token", quantizer="gptq"),
              Choice(3, 32, quantizer="gptq+bias_correction"), plain):
        assert Choice.from_key(c.key) == c and Choice.from_dict(c.to_dict()) == c
    assert Choice(8, 4, 0.25, 64, True, act="token", quantizer="gptq").key == "w8a4tp0.25g64z@gptq"
    # a policy of plain choices hashes as before the new fields existed
    old = Policy.from_choices({"a": Choice(4, 8), "b": Choice(2, 32, group=128)})
    assert old.to_dict()["layers"] == [{"name": "a", "w_bits": 4, "a_bits": 8, "prune": 0.0},
                                       {"name": "b", "w_bits": 2, "a_bits": 32, "prune": 0.0, "group": 128}]
    assert Policy.from_choices({"a": Choice(4, 8, act="token"), "b": Choice(2, 32, group=128)}).id != old.id
    with pytest.raises(ValueError, match="act"):
        Choice(4, 8, act="row")
    with pytest.raises(ValueError):
        Choice.from_key("w4a8@")


def test_per_token_fake_quant_is_the_per_row_closed_form():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 16) * torch.logspace(-1, 1, 7)[None, :, None]   # tokens of very different scales
    x[0, 2] = x[0, 2].abs()                                                  # a row with no negative value
    for bits in (4, 8):
        got = fake_quant_act_token(x, bits)
        rows = x.reshape(-1, 16)
        want = torch.stack([fake_quant_act(r, float(r.min()), float(r.max()), bits) for r in rows]).reshape(x.shape)
        assert torch.allclose(got, want, atol=1e-6, rtol=0), bits
        assert torch.equal(fake_quant_act(x, *TOKEN_RANGE, bits), got)
        per_row_levels = max(int(torch.unique(r).numel()) for r in got.reshape(-1, 16))
        assert per_row_levels <= 2**bits


def test_apply_quantizes_per_token_inputs_without_calibrated_ranges():
    torch.manual_seed(1)
    lin = torch.nn.Sequential(torch.nn.Linear(16, 4))
    c = Choice(32, 4, act="token")
    assert input_range(None, "0", c) == TOKEN_RANGE       # nothing calibrated is needed
    x = torch.randn(2, 5, 16)
    got = apply(lin, Policy.from_choices({"0": c}))(x)
    assert torch.allclose(got, lin(fake_quant_act_token(x, 4)), atol=1e-6)
    assert not torch.allclose(got, lin(x), atol=1e-3)


def test_per_token_is_offered_only_to_layers_with_a_token_axis(digits_layers):
    from autocomp.testing.hf import tiny_gpt2

    wl = tiny_gpt2()
    lm = profile_model(wl.model(), wl.sample_input())
    sp = load_space("w_and_a")
    for l in lm:
        keys = [c.key for c in sp.choices_for(l, len(lm))]
        if l.weight_only:
            assert not any("t" in k for k in keys), l.name
        else:
            assert has_token_axis(l) and "w4a4t" in keys and "w4a4" in keys and "w4a32" in keys and "w4a32t" not in keys
    # digits (convolutions, an MLP head on flat features): the w_and_a choices it always had
    plain = space_from_dict({k: v for k, v in sp.to_dict().items() if k != "act"})
    for l in digits_layers:
        assert not has_token_axis(l)
        assert sp.choices_for(l, len(digits_layers)) == plain.choices_for(l, len(digits_layers))
    only_token = space_from_dict({"choices": ["w4a8t"]})
    with pytest.raises(SearchSpaceError, match="no token axis"):
        only_token.choices_for(digits_layers[0], len(digits_layers))
    assert only_token.choices_for(lm[2], len(lm)) == [Choice(4, 8, act="token")]


def test_unknown_act_in_a_space_is_one_clear_error():
    with pytest.raises(SearchSpaceError, match="'act' has 'row'"):
        space_from_dict({"w_bits": [4], "act": ["tensor", "row"]})
    with pytest.raises(SearchSpaceError, match="overrides\\[0\\].act"):
        space_from_dict({"w_bits": [4], "overrides": [{"match": "x", "act": "dynamic"}]})


def test_per_token_beats_per_tensor_at_a4_with_outlier_tokens():
    """A transformer layer's real input, with a few tokens scaled up as outlier tokens are (a
    tiny trained GPT-2; LLMs' attention-sink tokens): one calibrated per-tensor range must span
    the outliers and rounds every ordinary token coarsely, per-token ranges do not."""
    from autocomp.testing.hf import tiny_gpt2

    wl = tiny_gpt2()
    model = wl.model()
    name = "transformer.h.1.mlp.c_fc"
    mod = dict(model.named_modules())[name]
    with capture_inputs(model, [name]) as seen, torch.no_grad():
        call_model(model, wl.calib[0][0])
    x = seen[name][0].clone()
    x[:, 0] *= 25.0                                   # the first token of every sequence an outlier
    with torch.no_grad():
        y = mod(x)
        errs = {}
        for bits in (4, 8):
            lo, hi = choose_act_range(x.flatten(), float(x.min()), float(x.max()), bits)
            errs[("tensor", bits)] = float(((mod(fake_quant_act(x, lo, hi, bits)) - y) ** 2).mean())
            errs[("token", bits)] = float(((mod(fake_quant_act_token(x, bits)) - y) ** 2).mean())
    assert errs[("token", 4)] < 0.5 * errs[("tensor", 4)], errs
    assert errs[("token", 8)] < errs[("tensor", 8)], errs


def test_tiny_gpt2_search_with_per_token_choices_end_to_end(ray_session, tmp_path):
    """A search over w4/w8 x a4 per tensor or per token on the shared Ray: every choice costs the
    same at either act, so the allocator takes per token where the measured loss says it is
    better; the uniform baselines stay per tensor. Stored qualities are the evaluator's."""
    from autocomp.evaluators import get_evaluator
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store
    from autocomp.workload import load_workload

    space = tmp_path / "tok.yaml"
    space.write_text("name: tok\nw_bits: [4, 8]\na_bits: [4]\nact: [tensor, token]\n")
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    spec = "autocomp.testing.hf:tiny_gpt2"
    run_search(SearchConfig(model=spec, space=str(space), budget="size<=30%", points=2, proxy="loss_delta",
                            workers=2, baselines=(4,)), store, "tok")
    study = store.get_study("tok")
    pols = {p.policy_id: Policy.from_dict(p.policy) for p in store.list_policies(study)}
    evals = {e.policy_id: e.quality for e in store.list_evaluations(study)}
    acts = {pid: {c.act for _, c in pol.layers if c.a_bits < 32} for pid, pol in pols.items()}
    assert any("token" in a for a in acts.values()) and any(a == {"tensor"} for a in acts.values()), acts
    wl = load_workload(spec)
    ev = get_evaluator("ptq")
    tok = next(pid for pid, a in acts.items() if "token" in a and pid in evals)
    assert ev.evaluate(wl, pols[tok]).quality == pytest.approx(evals[tok], rel=1e-4)
    store.dispose()


def test_kernels_and_torchao_take_per_token_layers_and_say_how():
    """Validation runs a per-token layer on the reference kernel path (the int8 kernels take a
    static input scale) and says so in its note; torchao's int8 dynamic config is per token."""
    from autocomp.kernels.modules import convert, kernel_note
    from autocomp.kernels.torchao_backend import DYNAMIC_NOTE, torchao_plan

    torch.manual_seed(2)
    m = torch.nn.Sequential(torch.nn.Linear(16, 8))
    pol = Policy.from_choices({"0": Choice(8, 8, act="token")})
    km = convert(m, pol, None)
    x = torch.randn(2, 5, 16) * torch.logspace(-1, 1, 5)[None, :, None]
    assert km[0].backend_for("cpu") == "reference"
    assert "per-token" in kernel_note(m[0], pol["0"]) and kernel_note(m[0], Choice(8, 8)) == ""
    assert torch.allclose(km[0](x), apply(m, pol)(x), atol=1e-5)
    plan = torchao_plan(m, pol).layers[0]
    assert plan.config == "Int8DynamicActivationInt8WeightConfig" and plan.note != DYNAMIC_NOTE
    assert torchao_plan(m, Policy.from_choices({"0": Choice(8, 8)})).layers[0].note.startswith(DYNAMIC_NOTE)


def test_proxies_measure_a_per_token_input_error_on_token_rows():
    """The proxies' input-error term (``act_mse``) of a per-token choice is measured on whole token
    rows of the calibration inputs, per token; the per-tensor choice keeps its scattered sample."""
    from autocomp.proxies._perturb import act_key, token_stats
    from autocomp.proxies.zero_cost import act_mse, omega_table
    from autocomp.testing.hf import tiny_gpt2

    wl = tiny_gpt2()
    model = wl.model()
    layers = profile_model(model, wl.sample_input())
    space = space_from_dict({"w_bits": [32], "a_bits": [4], "act": ["tensor", "token"]})
    table = omega_table(layers, space, model, wl.calib,
                        lambda n, c, dw, act: 0.0 if act is None else act_mse(act[2], act[0], act[1], int(c.a_bits)))
    rows = token_stats(model, layers, wl.calib, space.choices(layers))
    name = "transformer.h.0.mlp.c_fc"
    sample = rows[act_key(name, Choice(32, 4, act="token"))][2]
    assert sample.dim() == 2 and sample.shape[1] == 32 and sample.shape[0] > 32
    want = float(((fake_quant_act_token(sample, 4) - sample) ** 2).mean())
    assert table[name]["w32a4t"] == pytest.approx(want, rel=1e-6)
    assert table[name]["w32a4t"] != pytest.approx(table[name]["w32a4"], rel=1e-3)
    assert "w32a4t" not in table["transformer.wte"]      # weight-only: float inputs, no per-token choice
