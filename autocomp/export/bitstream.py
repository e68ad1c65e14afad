"""Dense storage of integer codes at their own bit-width: what a checkpoint's size is measured on.

The kernels' int32 words (:mod:`autocomp.kernels.packing`) hold 1, 2, 4 or 8 bits; a 3- or
6-bit layer in them would take a third more than the cost model counts. A checkpoint stores
codes at exactly ``bits`` bits each (any width from 1 to 16, as a little-endian bit stream), and
ternary codes five to a byte (base 3: 1.6 bits each, against the 1.58 the cost model counts).
Codes are unsigned here: callers shift signed codes by ``2**(bits-1)`` first.

Example:
    >>> import torch
    >>> from autocomp.export.bitstream import pack_bits, unpack_bits
    >>> c = torch.tensor([0, 5, 7, 2, 1])
    >>> b = pack_bits(c, 3)
    >>> b.numel(), unpack_bits(b, 3, 5).tolist()
    (2, [0, 5, 7, 2, 1])
"""
from __future__ import annotations

import numpy as np
import torch

TRITS_PER_BYTE = 5


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``codes`` (unsigned, each below ``2**bits``) as a uint8 stream of ``ceil(n * bits / 8)`` bytes."""
    c = codes.detach().reshape(-1).to(torch.int64).cpu().numpy()
    if c.size and (c.min() < 0 or c.max() >= 2**bits):
        raise ValueError(f"codes outside [0, {2**bits - 1}] do not fit {bits} bits")
    planes = ((c[:, None] >> np.arange(bits)) & 1).astype(np.uint8)  # [n, bits], lowest bit first
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_bits(stream: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``n`` unsigned codes as int64."""
    planes = np.unpackbits(stream.cpu().numpy().astype(np.uint8), bitorder="little", count=n * bits)
    planes = planes.reshape(n, bits).astype(np.int64)
    return torch.from_numpy((planes << np.arange(bits)).sum(axis=1))


def pack_trits(codes: torch.Tensor) -> torch.Tensor:
    """Ternary codes in {0, 1, 2} (signed -1..1 shifted by 1), five per byte (3**5 = 243 < 256)."""
    c = codes.detach().reshape(-1).to(torch.int64).cpu().numpy()
    if c.size and (c.min() < 0 or c.max() > 2):
        raise ValueError("ternary codes must lie in {0, 1, 2}")
    c = np.concatenate([c, np.zeros((-c.size) % TRITS_PER_BYTE, dtype=np.int64)]).reshape(-1, TRITS_PER_BYTE)
    return torch.from_numpy((c * 3 ** np.arange(TRITS_PER_BYTE)).sum(axis=1).astype(np.uint8))


def unpack_trits(stream: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_trits`: ``n`` codes in {0, 1, 2} as int64."""
    b = stream.cpu().numpy().astype(np.int64)[:, None]
    return torch.from_numpy(((b // 3 ** np.arange(TRITS_PER_BYTE)) % 3).reshape(-1)[:n])
