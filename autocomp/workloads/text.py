"""Text data for language-model workloads: read a file, cut token ids into fixed-length blocks,
split them into calibration and evaluation batches.

The split is deterministic and documented, so that two runs (and every Ray worker) see the same
data: the token stream of the whole file (texts joined in file order) is cut into consecutive
blocks of ``seq_len`` tokens (a trailing partial block is dropped); the **last** ``n_eval``
blocks (at most half of them) are the evaluation set and the **first** ``n_calib`` of the rest
the calibration set, in batches of ``batch`` sequences. A block's target is the block itself
(Hugging Face's ``labels`` convention: the loss shifts by one position).

Example:
    >>> import torch
    >>> calib, ev = lm_splits(list(range(40)), seq_len=8, n_calib=2, n_eval=2, batch=2)
    >>> [tuple(x.shape) for x, _ in calib], [tuple(x.shape) for x, _ in ev]
    ([(2, 8)], [(2, 8)])
    >>> int(ev[0][0][0, 0])       # the evaluation blocks are the last ones: tokens 24..39
    24
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from autocomp.errors import ModelSpecError

N_CALIB, N_EVAL, BATCH = 32, 32, 8   # sequences; the defaults of every text workload
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_texts(path: str | Path) -> list[str]:
    """The texts of a data file: a ``.jsonl``/``.ndjson`` file's ``"text"`` fields (one JSON object
    a line, blank lines skipped), or any other file's whole content as one text (UTF-8).

    Raises:
        ModelSpecError: a missing, unreadable, non-UTF-8 or empty file, or a JSONL line without
            a ``"text"`` string.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ModelSpecError(f"--data {str(p)!r} is a directory: give a text or JSONL file")
    if not p.is_file():
        raise ModelSpecError(f"--data {str(p)!r}: no such file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ModelSpecError(f"--data {str(p)!r}: cannot read it ({e.strerror or e})") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelSpecError(f"--data {str(p)!r}: not UTF-8 text (byte {e.start})") from None
    if p.suffix.lower() in JSONL_SUFFIXES:
        texts = []
        for i, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ModelSpecError(f"--data {str(p)!r}: line {i} is not JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise ModelSpecError(f"--data {str(p)!r}: line {i} has no \"text\" string")
            texts.append(rec["text"])
    else:
        texts = [content]
    if not any(t.strip() for t in texts):
        raise ModelSpecError(f"--data {str(p)!r}: the file holds no text")
    return texts


def blocks(ids: Sequence[int], seq_len: int) -> torch.Tensor:
    """Consecutive ``[N, seq_len]`` blocks of ``ids`` (a trailing partial block dropped)."""
    n = len(ids) // seq_len
    return torch.tensor(list(ids[: n * seq_len]), dtype=torch.long).reshape(n, seq_len)


def lm_splits(ids: Sequence[int], seq_len: int, n_calib: int = N_CALIB, n_eval: int = N_EVAL,
              batch: int = BATCH, what: str = "data") -> tuple[list, list]:
    """Calibration and evaluation batches ``(ids [B, seq_len], ids)`` of a token stream (see the
    module docstring for the split).

    Raises:
        ModelSpecError: fewer than two blocks (the text is too short for ``seq_len``).
    """
    b = blocks(ids, seq_len)
    if len(b) < 2:
        raise ModelSpecError(f"{what}: {len(ids)} tokens make {len(b)} block(s) of {seq_len}; at least 2 are "
                             f"needed (a calibration and an evaluation block): give more text or a smaller --seq-len")
    k = min(n_eval, len(b) // 2)
    ev, rest = b[len(b) - k:], b[: len(b) - k]
    cal = rest[:n_calib]
    return batched(cal, batch), batched(ev, batch)


def spread(b: torch.Tensor, n: int, offset: float = 0.0) -> torch.Tensor:
    """``n`` rows of ``b`` at even steps through it (row ``floor((i + offset) * len(b) / n)``),
    so a split drawn from a long stream covers all of it rather than its start.

    Example:
        >>> spread(torch.arange(10).reshape(10, 1), 3).flatten().tolist()
        [0, 3, 6]
        >>> spread(torch.arange(10).reshape(10, 1), 3, 0.5).flatten().tolist()
        [1, 5, 8]
    """
    if not 0 < n <= len(b):
        raise ValueError(f"cannot spread {n} rows over {len(b)}")
    idx = torch.tensor([int((i + offset) * len(b) / n) for i in range(n)], dtype=torch.long)
    return b[idx.clamp(max=len(b) - 1)]


def batched(b: torch.Tensor, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(ids, ids)`` batches of at most ``batch`` rows of ``b``."""
    return [(b[i:i + batch], b[i:i + batch]) for i in range(0, len(b), batch)]
