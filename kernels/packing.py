"""Bit packing of integer weight codes into int32 words: 1, 2 (ternary), 4 and 8 bits.

Codes are the signed integers of :func:`autocomp.quant.quantize_weight_codes`. They are stored
unsigned with an offset of ``2**(bits-1)`` (4 bits: -8..7 -> 0..15; 2 bits: -2..1 -> 0..3, so
ternary -1..1 -> 1..3); 1 bit stores the sign (1 for +1, 0 for -1). ``32 // bits`` codes share
one int32 word along ``dim``; word ``j`` holds codes ``j*per .. j*per+per-1`` with code ``i`` at
bit ``(i % per) * bits``, which is what the Triton kernels unpack.

Example:
    >>> import torch
    >>> from autocomp.kernels.packing import pack, unpack
    >>> q = torch.tensor([[-8, 7, 0, 1, -1, 3, 2, -2]])
    >>> p = pack(q, 4, dim=1)
    >>> p.shape, bool((unpack(p, 4, 8, dim=1) == q).all())
    (torch.Size([1, 1]), True)
"""
from __future__ import annotations

import torch

SUPPORTED_BITS = (1, 2, 4, 8)


def per_word(bits: int) -> int:
    """Codes per int32 word."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"packing supports {SUPPORTED_BITS} bits, not {bits}")
    return 32 // bits


def code_range(bits: int) -> tuple[int, int]:
    """Smallest and largest signed code a ``bits`` container holds (1 bit: -1 and 1)."""
    if bits == 1:
        return -1, 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def container_bits(codes: torch.Tensor) -> int:
    """The smallest packing width holding every code (binary codes with pruned zeros need 2)."""
    lo, hi = int(codes.min()), int(codes.max())
    values = torch.unique(codes)
    if bool(((values == -1) | (values == 1)).all()):
        return 1
    for b in (2, 4, 8):
        qlo, qhi = code_range(b)
        if qlo <= lo and hi <= qhi:
            return b
    raise ValueError(f"codes in [{lo}, {hi}] do not fit 8 bits")


def _to_unsigned(codes: torch.Tensor, bits: int) -> torch.Tensor:
    c = codes.round().to(torch.int64)
    lo, hi = code_range(bits)
    if bits == 1:
        if not bool(((c == -1) | (c == 1)).all()):
            raise ValueError("1-bit packing takes codes in {-1, 1}")
        return (c > 0).to(torch.int64)
    if int(c.min()) < lo or int(c.max()) > hi:
        raise ValueError(f"codes outside [{lo}, {hi}] cannot be packed in {bits} bits")
    return c + 2 ** (bits - 1)


def pack(codes: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """Pack signed integer ``codes`` along ``dim`` into int32 words (zero-padded to a full word).

    Args:
        codes: integer-valued tensor (any dtype).
        bits: 1, 2, 4 or 8.
        dim: the dimension packed (the GEMM reduction dimension for the kernels).

    Returns:
        int32 tensor with ``dim`` shrunk to ``ceil(size / (32 // bits))``.
    """
    per = per_word(bits)
    u = _to_unsigned(codes, bits).movedim(dim, -1)
    n = u.shape[-1]
    pad = (-n) % per
    if pad:
        # Padding stores code 0 (offset) so that padded weights dequantize to 0 (1 bit: -1, but
        # the kernels mask padded K positions anyway).
        fill = 0 if bits == 1 else 2 ** (bits - 1)
        u = torch.cat([u, u.new_full(u.shape[:-1] + (pad,), fill)], dim=-1)
    u = u.reshape(u.shape[:-1] + (-1, per))
    shifts = torch.arange(per, dtype=torch.int64, device=u.device) * bits
    words = (u << shifts).sum(dim=-1)  # disjoint bit fields: sum == bitwise or
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return words.movedim(-1, dim)


def unpack(words: torch.Tensor, bits: int, size: int, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`pack`: signed int8 codes with ``size`` entries along ``dim``."""
    per = per_word(bits)
    w = words.movedim(dim, -1).to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(per, dtype=torch.int64, device=w.device) * bits
    u = (w[..., None] >> shifts) & ((1 << bits) - 1)
    u = u.reshape(u.shape[:-2] + (-1,))[..., :size]
    c = 2 * u - 1 if bits == 1 else u - 2 ** (bits - 1)
    return c.to(torch.int8).movedim(-1, dim)


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes a packed tensor of ``numel`` codes takes (whole words)."""
    per = per_word(bits)
    return 4 * ((numel + per - 1) // per)
