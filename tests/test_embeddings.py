"""Embeddings and LM heads as layers, on tiny transformers built from configs (random weights)."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from autocomp.budget import CostModel, parse_budget  # noqa: E402
from autocomp.calibrate import activation_stats  # noqa: E402
from autocomp.kernels.validate import validate_policy  # noqa: E402
from autocomp.modules import activation_layers, layer_roles, quantizable_layers  # noqa: E402
from autocomp.policy import Choice, Policy, apply  # noqa: E402
from autocomp.profile import model_param_count, profile_model  # noqa: E402
from autocomp.search_spaces import load_space, space_from_dict  # noqa: E402
from autocomp.stages.allocate import baselines  # noqa: E402
from autocomp.stages.context import make_context  # noqa: E402


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    m = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    return m, {"input_ids": ids}


@pytest.fixture(scope="module")
def gpt2_layers(gpt2):
    m, x = gpt2
    return profile_model(m, x)


def test_tied_embedding_is_one_layer(gpt2, gpt2_layers):
    m, _ = gpt2
    by = {l.name: l for l in gpt2_layers}
    assert "lm_head" not in by
    wte = by["transformer.wte"]
    assert wte.roles == ("embedding", "lm_head") and wte.aliases == ("lm_head",)
    assert by["transformer.wpe"].roles == ("embedding",) and by["transformer.wpe"].macs == 0
    assert by["transformer.h.0.attn.c_attn"].roles == ("linear",)
    # The head's matmul is the tied layer's MACs: tokens x vocab x dim.
    assert wte.macs == 16 * 256 * 64
    # Counted once: the layers' weights plus the rest are every parameter, as torch counts them.
    cm = CostModel(gpt2_layers, total_params=model_param_count(m))
    assert sum(l.params for l in gpt2_layers) + cm.other_params == sum(p.numel() for p in m.parameters())
    assert cm.fp32("size") == 4 * sum(p.numel() for p in m.parameters())


def test_weight_only_two_bits_is_small(gpt2, gpt2_layers):
    m, _ = gpt2
    sp = load_space("weight_only")
    cm = CostModel(gpt2_layers, total_params=model_param_count(m))
    smallest = Policy.from_choices({l.name: min(sp.choices_for(l, len(gpt2_layers)), key=lambda c: c.w_bits)
                                    for l in gpt2_layers})
    assert all(c.key == "w2a32g128" for _, c in smallest.layers)
    share = cm.cost("size", smallest) / cm.fp32("size")
    assert share < 0.25
    # BitOps: embeddings none, the tied head's matmul at 2 x 32 bits.
    assert cm.layer_cost("bitops", gpt2_layers[0], Choice(2, 32, group=128)) == 16 * 256 * 64 * 2 * 32


def test_embeddings_never_quantize_inputs(gpt2_layers):
    sp = load_space("mixed_precision")
    n = len(gpt2_layers)
    for l in gpt2_layers:
        a = {c.a_bits for c in sp.choices_for(l, n)}
        assert a == ({32} if l.weight_only else {8}), l.name


def test_shorthands_and_alias_names(gpt2_layers):
    n = len(gpt2_layers)
    sp = space_from_dict({"w_bits": [2, 4], "overrides": [{"match": "@embeddings", "w_bits": [8]}]})
    sp.check_layers(gpt2_layers)
    w = {l.name: {c.w_bits for c in sp.choices_for(l, n)} for l in gpt2_layers}
    assert w["transformer.wte"] == w["transformer.wpe"] == {8} and w["transformer.h.0.mlp.c_fc"] == {2, 4}
    for match in ("@lm_head", "lm_head"):     # by role, and by the alias's own name
        sp = space_from_dict({"w_bits": [2, 4], "overrides": [{"match": match, "skip": True}]})
        sp.check_layers(gpt2_layers)
        skipped = [l.name for l in gpt2_layers if sp.choices_for(l, n) == [Choice(32, 32, 0.0)]]
        assert skipped == ["transformer.wte"]


def test_apply_compresses_both_uses(gpt2, gpt2_layers):
    m, x = gpt2
    pol = Policy.from_choices({l.name: Choice(4, 32, group=32) for l in gpt2_layers})
    q = apply(m, pol)
    assert q.lm_head.weight is q.transformer.wte.weight
    w = m.transformer.wte.weight.detach()
    assert not torch.equal(q.lm_head.weight, w)
    assert len(torch.unique(q.transformer.wte.weight[0])) <= 2 * 16       # two groups of 16 levels
    with torch.no_grad():
        y0, y1 = m(**x).logits, q(**x).logits
    assert torch.isfinite(y1).all() and 0 < float((y1 - y0).abs().max())
    assert torch.equal(m.transformer.wte.weight, w)                         # the float model untouched


def test_activation_statistics_skip_embeddings(gpt2):
    m, x = gpt2
    names = [n for n, _ in activation_layers(m)]
    assert "transformer.wte" not in names and "transformer.wpe" not in names
    assert len(names) == len(quantizable_layers(m)) - 2
    stats = activation_stats(m, names, [(x, None)])
    assert all(lo < hi for lo, hi, _ in stats.values())


def test_baselines_follow_the_space(gpt2, gpt2_layers):
    m, _ = gpt2
    budget = parse_budget("size<=50%")
    ctx = make_context("gpt2", gpt2_layers, load_space("weight_only"), budget, model_param_count(m))
    base = baselines(ctx, (8, 4))
    assert [c.label for c in base] == ["uniform w8a32g128", "uniform w4a32g128",
                                       "uniform w4a32g128, embeddings 8-bit", "fp32"]
    assert all(c.a_bits == 32 and c.group == 128 for cand in base[:3] for _, c in cand.policy.layers)
    # LLM tools' default: the embeddings (and a tied head with them) at 8 bits, the rest at 4
    mix = base[2].policy
    assert mix["transformer.wte"].w_bits == 8 and mix["transformer.h.0.attn.c_attn"].w_bits == 4
    ctx = make_context("gpt2", gpt2_layers, load_space("mixed_precision"), budget, model_param_count(m))
    pol = baselines(ctx, (4,))[0].policy
    assert pol["transformer.wte"] == Choice(4, 32) and pol["transformer.h.0.attn.c_attn"] == Choice(4, 8)
    ctx = make_context("gpt2", gpt2_layers, load_space("int4_int8"), budget, model_param_count(m))
    labels = [c.label for c in baselines(ctx, (8, 6, 4))]
    assert labels == ["uniform w8a32z", "uniform w4a32g128", "uniform w4a32g128, embeddings 8-bit", "fp32"]
    nncf_default = baselines(ctx, (4,))[1].policy   # NNCF's compress_weights INT4_SYM g128 at ratio 1.0
    assert {c.key for n, c in nncf_default.layers if "wte" in n or "wpe" in n} == {"w8a32z"}
    assert {c.key for n, c in nncf_default.layers if "wte" not in n and "wpe" not in n} == {"w4a32g128"}


def test_bert_embeddings_are_layers():
    cfg = transformers.BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100, max_position_embeddings=32)
    m = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    layers = profile_model(m, {"input_ids": ids})
    emb = [l.name for l in layers if l.roles == ("embedding",)]
    assert set(emb) == {"embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"}
    assert not any("lm_head" in l.roles for l in layers) and set(layer_roles(m)) == {l.name for l in layers}
    assert all(l.macs == 0 for l in layers if l.name in emb)


@pytest.mark.parametrize("space", ["weight_only", "int4_int8"])
def test_validate_reports_layers_without_kernels(gpt2, gpt2_layers, space):
    m, x = gpt2
    sp = load_space(space)
    n = len(gpt2_layers)
    pol = Policy.from_choices({l.name: sp.choices_for(l, n)[0 if space == "weight_only" else -1] for l in gpt2_layers})
    rep = validate_policy(m, pol, {}, x, "cpu", repeats=1)
    by = {l.name: l for l in rep.layers}
    assert set(by) == {l.name for l in gpt2_layers}
    assert by["transformer.wte"].backend == "simulated" and "tied to lm_head" in by["transformer.wte"].note
    assert "embedding" in by["transformer.wpe"].note
    lin = by["transformer.h.0.mlp.c_fc"]
    if space == "int4_int8":   # w8 asymmetric: the reference path, said so
        assert lin.backend == "reference" and "zero point" in lin.note
    assert rep.ok and lin.max_rel_err <= lin.bound and any(lin.name in s for s in rep.notes()) == bool(lin.note)
