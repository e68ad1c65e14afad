"""``tiny-lm``: a small GPT-2-style causal LM on the Python standard library's own source code.

* Model: ``transformers.GPT2LMHeadModel`` from a ``GPT2Config`` (4 blocks, width 64, 4 heads,
  MLP 256, context 128, tied ``wte`` / ``lm_head``, ~0.22 M parameters), default (SDPA) attention.
* Tokenizer: bytes. A token is one byte of the UTF-8 text (vocabulary 256), so nothing is
  downloaded and every Python reads the same ids.
* Data: the ``*.py`` files directly in the standard library directory
  (``sysconfig.get_paths()["stdlib"]``, no sub-packages), sorted by name, each cut to its first
  ``FILE_BYTES`` bytes; every ``VAL_EVERY``-th file (index 9, 19, ...) is validation, the others
  training. The files differ between Python versions, so the cache key names the version.
* Training on first use: ``STEPS`` AdamW steps of ``BATCH`` random 128-byte windows of the
  training stream (seed 0), then cached like ``digits`` (``AUTOCOMP_CACHE``).
* Splits (version 2, :data:`SPLITS`), in batches of 8 blocks of 128 bytes, each drawn at even
  steps over its whole stream (:func:`autocomp.workloads.text.spread`): calibration = 32 blocks
  of the training stream, evaluation = 128 blocks (16,384 bytes) of the validation stream, and a
  test split of 512 other validation blocks (:func:`held_out_split`) that no search sees, for
  benchmarks. Version 1 (until session 7) took the *first* 32 blocks of each stream: the start of
  one file, whose perplexity differences at 4 bits were smaller than its noise.
* Metric: ``perplexity`` (per byte, lower is better; 8.84 on Python 3.11, 9.26 on the test split;
  byte frequencies alone give about 24), next-token cross-entropy for proxies.

Example:
    >>> from autocomp.workload import load_workload
    >>> wl = load_workload("tiny-lm")                        # doctest: +SKIP
    >>> round(wl.evaluate(wl.model()), 1)                    # doctest: +SKIP
    10.0
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import torch

from autocomp.workload import Workload, cross_entropy, perplexity
from autocomp.workloads._cache import cached_state
from autocomp.workloads.text import batched, blocks, spread

ARCH_VERSION = 1
SEQ, VOCAB = 128, 256
FILE_BYTES, VAL_EVERY = 32_768, 10
STEPS, BATCH, LR = 400, 16, 6e-3
N_CALIB, N_EVAL, N_TEST, EVAL_BATCH = 32, 128, 512, 8
SPLITS = 2


def stdlib_files() -> list[Path]:
    """The standard library's top-level ``.py`` files, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.is_file())


def byte_streams() -> tuple[list[int], list[int]]:
    """(training ids, validation ids): the files' bytes joined in order (see the module docstring)."""
    train, val = bytearray(), bytearray()
    for i, p in enumerate(stdlib_files()):
        data = p.read_bytes()[:FILE_BYTES]
        (val if i % VAL_EVERY == VAL_EVERY - 1 else train).extend(data)
    return list(train), list(val)


def config():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=64, n_layer=4, n_head=4, n_inner=256,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)


def _train(train_ids: list[int]) -> dict:
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(config())
    stream = torch.tensor(train_ids, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.1)
    model.train()
    for _ in range(STEPS):
        start = torch.randint(len(stream) - SEQ, (BATCH,), generator=g)
        x = torch.stack([stream[s:s + SEQ] for s in start.tolist()])
        opt.zero_grad()
        cross_entropy(model(x), x).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.state_dict()


def _cache_key() -> str:
    return f"tiny-lm-v{ARCH_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"


def _trained(train_ids: list[int]):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(config())
    with torch.random.fork_rng():
        state = cached_state(_cache_key(), lambda: _train(train_ids))
    # strict=False: the tied lm_head.weight may be absent from a saved state dict (it is wte's)
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.eval()


def tiny_lm() -> Workload:
    """The built-in ``tiny-lm`` workload (perplexity, lower is better)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        from autocomp.errors import ModelSpecError

        raise ModelSpecError("the tiny-lm workload needs transformers: pip install 'autocomp[hf]'") from None
    train_ids, val_ids = byte_streams()
    calib = batched(spread(blocks(train_ids, SEQ), N_CALIB), EVAL_BATCH)
    ev = batched(spread(blocks(val_ids, SEQ), N_EVAL), EVAL_BATCH)
    return Workload(name="tiny-lm", model_factory=lambda: _trained(train_ids), calib=calib, eval=ev,
                    metric=perplexity, loss=cross_entropy, quality="perplexity")


def held_out_split() -> list:
    """``N_TEST`` validation blocks, none of them an evaluation block, in batches of 8: scored by
    the benchmarks (``benchmarks/vs_nncf.py``) after a search chose its policies on the
    evaluation split, never by a search."""
    _, val_ids = byte_streams()
    b = blocks(val_ids, SEQ)
    ev = {int(i * len(b) / N_EVAL) for i in range(N_EVAL)}
    test = {int((i + 0.5) * len(b) / N_TEST) for i in range(N_TEST)}
    if ev & test or len(test) < N_TEST:
        raise RuntimeError(f"{len(b)} validation blocks are too few for disjoint evaluation and test splits")
    return batched(spread(b, N_TEST, 0.5), EVAL_BATCH)
