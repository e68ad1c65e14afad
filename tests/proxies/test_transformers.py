"""Every registered proxy on Hugging Face transformers with their default (SDPA) attention: a tiny
GPT-2 causal LM (tied embeddings, ``[B, T, V]`` logits) and a tiny BERT classifier (dict inputs,
an attention mask), through the proxy contract; plus the attention kernel switch of the Hessian
proxies and relevance conservation of LRP through HF GELU, LayerNorm and attention.
"""
from __future__ import annotations

import copy

import pytest
import torch

from autocomp.proxies import list_proxies
from autocomp.proxies.hessian import _Grad
from autocomp.proxies.lrp import held_attention, relevance_per_layer
from autocomp.testing import ProxyContract, _data

pytest.importorskip("transformers")

GPT2 = "autocomp.testing.hf:tiny_gpt2"
BERT = "autocomp.testing.hf:tiny_bert"
# Small enough for a 2-core machine; the contract does not depend on the probe count.
OPTIONS = {"hessian_trace": {"max_probes": 6, "min_probes": 3}, "hessian_eig": {"max_iter": 5}}
# Curvature of a transformer is indefinite: a layer's trace or top eigenvalue may be negative
# (the sensitivities are still clamped at zero).
SIGNED_SCORES = {"hessian_trace", "hessian_eig"}
EXPECTED = {"fisher", "grad_norm", "hessian_eig", "hessian_trace", "loss_delta", "lrp", "quant_mse", "snip",
            "synflow"}


def test_every_registered_proxy_is_covered_here():
    assert EXPECTED <= set(list_proxies())


def _contract(proxy: str, spec: str) -> type:
    return type(f"Test{proxy.title().replace('_', '')}{'Gpt2' if spec == GPT2 else 'Bert'}", (ProxyContract,),
                {"proxy": proxy, "workload_spec": spec, "options": OPTIONS.get(proxy, {}),
                 "scores_non_negative": proxy not in SIGNED_SCORES, "__module__": __name__})


for _p in sorted(EXPECTED):
    for _spec in (GPT2, BERT):
        _cls = _contract(_p, _spec)
        globals()[_cls.__name__] = _cls
del _p, _spec, _cls


def test_the_test_models_use_sdpa_and_tie_gpt2s_head():
    gpt2, bert = _data.workload(GPT2).model(), _data.workload(BERT).model()
    assert gpt2.config._attn_implementation == "sdpa" and bert.config._attn_implementation == "sdpa"
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    layers = {l.name: l for l in _data.layers(GPT2)}
    assert "lm_head" not in layers and tuple(layers["transformer.wte"].aliases) == ("lm_head",)


def test_sdpa_has_no_double_backward_so_the_hessian_graph_uses_the_math_kernel():
    """The reason for the switch (the fused CPU kernel cannot be differentiated twice), and that it
    holds only while a graph is alive."""
    wl = _data.workload(GPT2)
    model, (x, y) = wl.model(), wl.calib[0]
    name = "transformer.h.0.attn.c_attn"
    w = dict(model.named_modules())[name].weight
    w.requires_grad_(True)
    try:
        g = torch.autograd.grad(wl.loss(model(x), y), w, create_graph=True)[0]
        with pytest.raises(RuntimeError, match="not implemented"):
            torch.autograd.grad((g * torch.ones_like(g)).sum(), w)
    finally:
        w.requires_grad_(False)
    flash = torch.backends.cuda.flash_sdp_enabled()
    with _Grad(model, [name], False) as ctx:
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        graph = ctx.graph((x, y), wl.loss, "hvp")
        assert graph.estimator == "hvp" and graph.values(0, 0, 0)[name] != 0.0
    assert torch.backends.cuda.flash_sdp_enabled() == flash
    assert model.config._attn_implementation == "sdpa"


def test_hessian_trace_on_gpt2_is_the_trace_of_the_exact_block_hessian():
    """Hutchinson with many probes on the small ``wpe`` block against the exact Hessian trace
    (torch.autograd.functional.hessian of the loss in that block, eager attention)."""
    wl = _data.workload(GPT2)
    model = wl.model()
    x, y = wl.calib[0]
    name = "transformer.wpe"
    w0 = model.transformer.wpe.weight.detach()[: x.shape[1]].clone()
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")

    def loss_of(rows: torch.Tensor) -> torch.Tensor:
        full = torch.cat([rows, eager.transformer.wpe.weight.detach()[x.shape[1]:]])
        out = torch.func.functional_call(eager, {"transformer.wpe.weight": full}, (x,))
        return wl.loss(out, y)

    exact = float(torch.autograd.functional.hessian(loss_of, w0).reshape(w0.numel(), -1).trace())
    from autocomp.proxies.hessian import probe_values

    vals = probe_values(model, wl.loss, (x, y), [name], range(400), estimator="hvp")
    est = sum(v[name] for v in vals) / len(vals)
    assert est == pytest.approx(exact, rel=0.15)
    assert model.config._attn_implementation == "sdpa"


def _no_bias(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with every bias zero: biases (and LayerNorm shifts) absorb relevance, so only then is
    conservation exact up to epsilon."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.zero_()
    return m


def test_held_attention_matches_sdpa_with_masks():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    bool_mask = torch.rand(2, 1, 5, 5) > 0.3
    bool_mask[..., 0] = True
    add_mask = torch.randn(2, 1, 5, 5)
    F = torch.nn.functional
    for kw in ({}, {"is_causal": True}, {"attn_mask": bool_mask}, {"attn_mask": add_mask}, {"scale": 0.3}):
        assert torch.allclose(held_attention(q, k, v, **kw), F.scaled_dot_product_attention(q, k, v, **kw),
                              atol=1e-5), kw


@pytest.mark.parametrize("spec, cuts", [
    (GPT2, ["transformer.h.0", "transformer.h.1", "transformer.ln_f", "lm_head"]),
    (BERT, ["bert.encoder", "bert.encoder.layer.1", "bert.pooler", "classifier"]),
])
def test_lrp_conserves_relevance_through_hf_gelu_layernorm_and_attention(spec, cuts):
    """Relevance summed at each cut of the network (a block's input: the whole residual stream)
    equals the target logits' sum, per sample: GELU (NewGELUActivation / GELUActivation), LayerNorm
    and SDPA attention pass it on without creating or losing any."""
    wl = _data.workload(spec)
    model = _no_bias(wl.model())
    x = wl.calib[0][0]
    r = relevance_per_layer(model, x, cuts)
    for n in cuts:
        assert torch.allclose(r.layer_input[n], r.target, rtol=2e-3, atol=1e-3), (n, r.layer_input[n], r.target)
    assert model.config._attn_implementation == "sdpa"


def test_lrp_without_the_rules_is_not_conservative():
    """The check above can fail: plain gradient x input through GELU, LayerNorm and softmax
    attention does not conserve (which is why the rules exist)."""
    wl = _data.workload(GPT2)
    model = _no_bias(wl.model())
    x = wl.calib[0][0]
    inp = model.transformer.wte(x).detach().requires_grad_(True)
    logits = model(inputs_embeds=inp).logits
    picked = logits.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)
    picked.sum().backward()
    grad_x_input = (inp * inp.grad).flatten(1).sum(1)
    assert not torch.allclose(grad_x_input, picked.detach().sum(1), rtol=2e-3, atol=1e-3)


def test_lrp_scores_embeddings_and_the_tied_head_together():
    """``transformer.wte`` is also GPT-2's head: its score adds both uses."""
    from autocomp.proxies.lrp import contribution_scores

    wl = _data.workload(GPT2)
    model, batch = wl.model(), wl.calib[0]
    both = contribution_scores(model, [batch], ["transformer.wte"], {"transformer.wte": ("lm_head",)})
    alone = contribution_scores(model, [batch], ["transformer.wte", "lm_head"])
    assert both["transformer.wte"] == pytest.approx(alone["transformer.wte"] + alone["lm_head"], rel=1e-6)
    assert alone["transformer.wte"] > 0 and alone["lm_head"] > 0


def test_synflow_on_token_ids_scores_the_rows_the_ids_select():
    """Integer inputs are kept (the first sample's ids): embedding rows never looked up get no flow."""
    from autocomp.proxies.saliency import synflow_scores

    wl = _data.workload(BERT)
    x = wl.sample_input()
    scores = synflow_scores(wl.model(), x, ["bert.embeddings.word_embeddings", "classifier"])
    assert scores["bert.embeddings.word_embeddings"] > 0 and scores["classifier"] > 0
    unused = sorted(set(range(wl.model().config.vocab_size)) - set(x["input_ids"][0].tolist()))
    m = copy.deepcopy(wl.model())
    with torch.no_grad():
        m.bert.embeddings.word_embeddings.weight[unused] *= 3.0
    again = synflow_scores(m, x, ["bert.embeddings.word_embeddings"])
    assert again["bert.embeddings.word_embeddings"] == pytest.approx(scores["bert.embeddings.word_embeddings"])


def test_distilled_data_on_a_token_model_is_refused_in_one_line():
    """ZeroQ matches BatchNorm statistics: transformers have none (and take token ids)."""
    from autocomp.errors import AutocompError
    from autocomp.proxies.distilled import with_data

    with pytest.raises(AutocompError, match="needs BatchNorm layers") as e:
        with_data(_data.workload(GPT2), "distilled")
    assert "\n" not in str(e.value)
