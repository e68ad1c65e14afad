"""Tiny Hugging Face model directories built offline, for tests of ``--model hf:PATH``.

:func:`save_tiny_model` writes what ``save_pretrained`` writes for a GPT-2 causal LM or a BERT
encoder built from a small config (random weights, seed 0), with a word-level tokenizer trained
by ``tokenizers`` on a few KB of the standard library's source and wrapped in
``PreTrainedTokenizerFast``. :func:`sample_text` is that text, to use as ``--data``.

Example:
    >>> d = save_tiny_model(tmp_path / "gpt", "causal-lm")          # doctest: +SKIP
    >>> sorted(p.name for p in d.iterdir())[:2]                     # doctest: +SKIP
    ['config.json', 'generation_config.json']
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

import torch

SPECIALS = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "<eos>"]


def sample_text(n_bytes: int = 24_000) -> str:
    """The first ``n_bytes`` of a few standard-library modules (real text, same on every run)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for name in ("abc.py", "bisect.py", "colorsys.py", "contextlib.py", "copy.py", "fnmatch.py", "heapq.py",
                 "keyword.py", "numbers.py", "operator.py", "queue.py", "random.py", "string.py", "textwrap.py"):
        p = root / name
        if p.is_file():
            out.append(p.read_text(encoding="utf-8"))
    return "\n".join(out)[:n_bytes]


def tokenizer(vocab: int = 400):
    """A word-level ``PreTrainedTokenizerFast`` trained on :func:`sample_text` (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([sample_text()], trainers.WordLevelTrainer(vocab_size=vocab, special_tokens=SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", eos_token="<eos>")


def tiny_model(task: str, vocab: int, layers: int = 2, width: int = 32, positions: int = 64) -> torch.nn.Module:
    """A small GPT-2 (``causal-lm``, tied embeddings) or BERT (``encoder``) with seeded random weights."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if task == "causal-lm":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=width, n_layer=layers,
                                          n_head=2, n_inner=2 * width, bos_token_id=5, eos_token_id=5))
    return BertModel(BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                                intermediate_size=2 * width, max_position_embeddings=positions, pad_token_id=1))


def save_tiny_model(directory: str | Path, task: str = "causal-lm", with_tokenizer: bool = True,
                    with_weights: bool = True) -> Path:
    """Write a tiny model directory (``task``: ``causal-lm`` or ``encoder``); the flags leave out
    the tokenizer or the weights (to test the errors for them)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    model = tiny_model(task, len(tok))
    model.save_pretrained(d)
    if not with_weights:
        for p in d.glob("*.safetensors"):
            p.unlink()
        for p in d.glob("*.bin"):
            p.unlink()
    if with_tokenizer:
        tok.save_pretrained(d)
    return d
