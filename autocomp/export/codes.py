"""One layer's stored form: codes, scales, zero points and pruning, encoded to what a file holds.

:func:`encode_layer` turns a layer's signed codes ``[N, K]`` (from
:func:`autocomp.kernels.modules.weight_qparams`: asymmetric codes already shifted to the signed
range), its scales and zero points into tensors and a JSON description; :func:`decode_layer`
inverts it. What is stored is what :class:`autocomp.costs.Size` counts, plus what it does not:

* codes of the weights a pruned layer keeps, at ``w_bits`` each: 1, 2, 4 and 8 bits in the
  kernels' int32 words (:func:`autocomp.kernels.packing.pack`), other widths as a dense bit
  stream, ternary five codes a byte (:mod:`autocomp.export.bitstream`);
* zero points packed like the codes (the cost model counts ``w_bits`` each);
* scales in fp16, per group or per channel;
* where the pruned weights were: a bitmask or a list of kept positions, whichever is smaller
  (:func:`encode_positions`).

Studies created before checkpoints existed count neither per-channel scales nor pruned
positions in their ``size``.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice
    >>> codes = torch.tensor([[-4, 3, 0, 1]])
    >>> t, d = encode_layer(codes, torch.tensor([0.5]), None, Choice(3, 32))
    >>> d["codes"], int(t["codes"].numel())
    ('bits3', 2)
    >>> c, s, z = decode_layer(t, d)
    >>> c.tolist(), s.tolist(), z
    ([[-4, 3, 0, 1]], [0.5], None)
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from autocomp.errors import AutocompError
from autocomp.export.bitstream import pack_bits, pack_trits, unpack_bits, unpack_trits
from autocomp.kernels.packing import pack, unpack
from autocomp.layout import code_format, index_bits, positions_tensor
from autocomp.policy import Choice

SCALE_DTYPE = torch.float16


def _encode(signed: torch.Tensor, fmt: str, bits: int) -> torch.Tensor:
    flat = signed.reshape(-1).to(torch.int64)
    if fmt == "trits":
        return pack_trits(flat + 1)
    if fmt.startswith("pack"):
        return pack(flat, bits, dim=0)
    return pack_bits(flat + 2 ** (bits - 1), bits)


def _decode(t: torch.Tensor, fmt: str, bits: int, n: int) -> torch.Tensor:
    if fmt == "trits":
        return unpack_trits(t, n) - 1
    if fmt.startswith("pack"):
        return unpack(t, bits, n, dim=0).to(torch.int64)
    return unpack_bits(t, bits, n) - 2 ** (bits - 1)


def encode_layer(codes: torch.Tensor, scale: torch.Tensor, zeros: torch.Tensor | None, choice: Choice,
                 mask: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (``codes``, ``scale``, ``zeros``, ``mask`` or ``index``) and description of one layer.

    Args:
        codes: signed codes ``[N, K]``; a pruned position's code is 0 (its zero point when asymmetric).
        scale: ``[N]`` per channel or ``[N, G]`` per group.
        zeros: like ``scale`` (signed, shifted like the codes), or None.
        mask: the kept weights ``[N, K]`` of a pruned layer, or None.
    """
    fmt, bits = code_format(choice.w_bits)
    n_rows, k = codes.shape
    kept = codes.reshape(-1) if mask is None else codes.reshape(-1)[mask.reshape(-1)]
    out = {"codes": _encode(kept, fmt, bits), "scale": scale.detach().to(SCALE_DTYPE).contiguous()}
    desc: dict[str, Any] = {"codes": fmt, "rows": n_rows, "cols": k, "kept": int(kept.numel()),
                            "scale_shape": list(scale.shape), "group": choice.group, "pruning": None}
    if zeros is not None:
        out["zeros"] = _encode(zeros.round(), fmt, bits)
    if mask is not None:
        key, t, desc["pruning"] = encode_positions(mask)
        out[key] = t
    return out, desc


def encode_positions(mask: torch.Tensor) -> tuple[str, torch.Tensor, str]:
    """Where a pruned layer's kept weights are: ``("mask", bits, "mask")`` (one bit a weight) or
    ``("index", positions, "indexB")`` (``B`` bits a kept weight), whichever is smaller -- what
    :func:`autocomp.layout.positions_tensor` describes.

    Example:
        >>> m = torch.zeros(100, dtype=torch.bool); m[[3, 50]] = True
        >>> k, t, fmt = encode_positions(m)
        >>> k, fmt, decode_positions({k: t}, fmt, 100, 2).nonzero().reshape(-1).tolist()
        ('index', 'index7', [3, 50])
    """
    numel = mask.numel()
    idx = mask.reshape(-1).nonzero().reshape(-1)
    if positions_tensor(numel, idx.numel())[0] == "index":
        ib = index_bits(numel)
        return "index", pack_bits(idx, ib), f"index{ib}"
    return "mask", pack_bits(mask.reshape(-1).to(torch.int64), 1), "mask"


def decode_positions(t: Mapping[str, torch.Tensor], pruning: str, numel: int, kept: int) -> torch.Tensor:
    """The flat kept-weight mask :func:`encode_positions` stored."""
    if pruning == "mask":
        return unpack_bits(t["mask"], 1, numel).bool()
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[unpack_bits(t["index"], int(str(pruning).removeprefix("index")), kept)] = True
    return mask


def decode_layer(t: Mapping[str, torch.Tensor], desc: Mapping[str, Any]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inverse of :func:`encode_layer`: signed codes ``[N, K]`` (int64), float32 scales, zero points.

    Raises:
        AutocompError: the tensors do not hold what ``desc`` says.
    """
    try:
        fmt, rows, cols, kept = str(desc["codes"]), int(desc["rows"]), int(desc["cols"]), int(desc["kept"])
        bits = 2 if fmt == "trits" else int(fmt.removeprefix("pack").removeprefix("bits"))
        flat = _decode(t["codes"], fmt, bits, kept)
        scale = t["scale"].float()
        if list(scale.shape) != list(desc["scale_shape"]):
            raise ValueError(f"scale shape {list(scale.shape)}, manifest says {desc['scale_shape']}")
        zeros = None if "zeros" not in t else _decode(t["zeros"], fmt, bits, scale.numel()).reshape(scale.shape).float()
        numel = rows * cols
        pruning = desc.get("pruning")
        mask = None if pruning is None else decode_positions(t, str(pruning), numel, kept)
        if flat.numel() != kept or (mask is not None and int(mask.sum()) != kept) or (mask is None and kept != numel):
            raise ValueError(f"{kept} stored codes do not fill a [{rows}, {cols}] weight")
    except (KeyError, ValueError, RuntimeError, IndexError) as e:
        raise AutocompError(f"layer data does not match its manifest entry: {e}") from None
    if mask is None:
        return flat.reshape(rows, cols), scale, zeros
    # a pruned weight is exactly 0: code 0, or the zero point of its group when asymmetric
    full = torch.zeros(numel, dtype=torch.int64)
    if zeros is not None:
        z = zeros if zeros.dim() == 2 else zeros[:, None]
        g = int(desc.get("group") or cols)
        full = z.repeat_interleave(g, dim=1)[:, :cols].reshape(-1).to(torch.int64)
    full[mask] = flat
    return full.reshape(rows, cols), scale, zeros
