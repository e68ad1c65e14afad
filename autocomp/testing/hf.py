"""Tiny Hugging Face transformers built from configs, as workloads (for tests of transformer support).

* ``tiny_gpt2``: ``GPT2LMHeadModel`` (2 blocks, width 32, tied embeddings), trained for a few
  steps to predict the next token of sequences that count up modulo the vocabulary;
  targets ``[B, T]`` next tokens, logits ``[B, T, V]``.
* ``tiny_bert``: ``BertForSequenceClassification`` (2 layers, width 32) on ``{"input_ids",
  "attention_mask"}`` batches, trained for a few steps to classify a sequence by its first token.

Both keep the default attention implementation (SDPA), as a user's model would. Nothing is
downloaded: the configs are written here and the weights are trained in a second or two, under a
fixed seed and one thread, so every process (a Ray worker included) rebuilds the same model.

Example:
    >>> from autocomp.workload import load_workload
    >>> wl = load_workload("autocomp.testing.hf:tiny_gpt2")          # doctest: +SKIP
    >>> wl.model().config._attn_implementation                        # doctest: +SKIP
    'sdpa'
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from autocomp.workload import Workload

VOCAB, SEQ, CLASSES = 64, 12, 4


def token_loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: logits ``[B, T, V]`` (or ``[B, V]``) against ids."""
    logits = output if isinstance(output, torch.Tensor) else output.logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))


def _counting(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences ``s, s+1, s+2, ...`` (mod VOCAB) with a little noise; targets are the next ids."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (n, 1), generator=g)
    seq = (start + torch.arange(SEQ + 1)) % VOCAB
    noise = torch.rand(seq.shape, generator=g) < 0.1
    seq = torch.where(noise, torch.randint(0, VOCAB, seq.shape, generator=g), seq)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def _train(model: torch.nn.Module, batches, loss: Callable, steps: int) -> torch.nn.Module:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # the same weights in every process, whatever its thread count
    try:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            out = model(**x) if isinstance(x, dict) else model(x)
            opt.zero_grad()
            loss(out, y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _gpt2_model() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return _train(GPT2LMHeadModel(cfg), [_counting(32, 100 + i) for i in range(4)], token_loss, 40)


def tiny_gpt2() -> Workload:
    """A 2-block GPT-2 causal LM (tied ``wte`` / ``lm_head``) with next-token targets.

    Example:
        >>> wl = tiny_gpt2()                                   # doctest: +SKIP
        >>> tuple(wl.model()(wl.calib[0][0]).logits.shape)     # doctest: +SKIP
        (8, 12, 64)
    """
    calib = [_counting(8, s) for s in (1, 2)]
    return Workload(name="tiny-gpt2", model_factory=_gpt2_model, calib=calib, eval=[_counting(16, 3)],
                    loss=token_loss)


def _bert_batch(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    mask = torch.ones(n, SEQ, dtype=torch.long)
    mask[: n // 2, -3:] = 0                     # some padded sequences: the mask matters
    return {"input_ids": ids, "attention_mask": mask}, ids[:, 0] % CLASSES


def _bert_model() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, num_labels=CLASSES,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    loss = lambda out, y: torch.nn.functional.cross_entropy(out.logits, y)  # noqa: E731
    return _train(BertForSequenceClassification(cfg), [_bert_batch(32, 200 + i) for i in range(4)], loss, 40)


def tiny_bert() -> Workload:
    """A 2-layer BERT encoder with a 4-class sequence classification head.

    Example:
        >>> wl = tiny_bert()                                   # doctest: +SKIP
        >>> sorted(wl.calib[0][0])                             # doctest: +SKIP
        ['attention_mask', 'input_ids']
    """
    calib = [_bert_batch(8, s) for s in (1, 2)]
    return Workload(name="tiny-bert", model_factory=_bert_model, calib=calib, eval=[_bert_batch(16, 3)])
