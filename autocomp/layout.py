"""What an autocomp checkpoint file stores, tensor by tensor: the one description the cost model
(:class:`autocomp.costs.Size`) counts and the exporter (:mod:`autocomp.export.codes`) writes.

A layer's choice decides its tensors (:func:`layer_tensors`): the kept codes at ``w_bits`` each
(1, 2, 4, 8 bits in int32 words; other widths a dense bit stream; ternary five a byte), fp16
scales per channel or group, zero points packed like the codes, and where a pruned layer's kept
weights are (a bitmask or a list of positions, whichever is smaller). A float layer keeps its fp32
weight, or its kept fp32 values and their positions when pruned. Every other tensor of the
model's state dict is stored as it is (:func:`other_tensors_bytes`). A safetensors file adds one
JSON header entry per tensor (:func:`header_entry_bytes`) and a short frame.

Example:
    >>> from autocomp.policy import Choice
    >>> from autocomp.profile import LayerInfo
    >>> l = LayerInfo("fc", "Linear", (64, 256), 64 * 256, 0, 0, (256,), (64,), 0)
    >>> [(k, d, s) for k, d, s in layer_tensors(l, Choice(4, 8))]
    [('weight.codes', 'I32', (2048,)), ('weight.scale', 'F16', (64,))]
    >>> layer_bytes(l, Choice(4, 8), offset_digits=5)     # codes, scales, two header entries
    8474
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from autocomp.quant import TERNARY_BITS, group_count, is_float

if TYPE_CHECKING:
    import torch

    from autocomp.policy import Choice
    from autocomp.profile import LayerInfo

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "F16": 2, "BF16": 2, "I32": 4, "F32": 4, "I64": 8, "F64": 8}
PACKED_BITS = (1, 2, 4, 8)      # widths the kernels' int32 words hold
TRITS_PER_BYTE = 5
# the file's frame: an 8-byte header length, the JSON object's braces less the last entry's comma,
# and on average half of the padding to 8 bytes
FRAME_BYTES = 8 + 1 + 4


@dataclass(frozen=True)
class FileLayout:
    """The model-wide part of a checkpoint's size, measured once when a model is profiled.

    Attributes:
        other_bytes: every state-dict tensor that is not a quantizable layer's weight (biases,
            norms, buffers), with its header entry.
        offset_digits: digits of a byte offset in this file (of the fp32 model's size): what a
            header entry's ``data_offsets`` take.
    """

    other_bytes: int
    offset_digits: int

    def to_dict(self) -> dict:
        return {"other_bytes": self.other_bytes, "offset_digits": self.offset_digits}

    @classmethod
    def from_dict(cls, d) -> "FileLayout":
        return cls(int(d["other_bytes"]), int(d["offset_digits"]))


def code_format(w_bits: float) -> tuple[str, int]:
    """How codes of ``w_bits`` are stored: ``(format, bits)`` with format ``packB`` (int32 words),
    ``bitsB`` (a dense bit stream) or ``trits`` (ternary, five a byte)."""
    if w_bits == 1:
        return "pack1", 1
    if abs(float(w_bits) - TERNARY_BITS) < 1e-6:
        return "trits", 2
    b = int(round(float(w_bits)))
    return (f"pack{b}" if b in PACKED_BITS else f"bits{b}"), b


def codes_tensor(n: int, fmt: str, bits: int) -> tuple[str, tuple[int, ...]]:
    """dtype and shape of ``n`` codes stored in ``fmt``."""
    if fmt == "trits":
        return "U8", (-(-n // TRITS_PER_BYTE),)
    if fmt.startswith("pack"):
        return "I32", (-(-n // (32 // bits)),)
    return "U8", (-(-n * bits // 8),)


def kept_count(numel: int, prune: float) -> int:
    """Weights a magnitude-pruned layer keeps (:func:`autocomp.quant.prune_mask`'s count)."""
    return numel - int(round(prune * numel)) if prune > 0 else numel


def index_bits(numel: int) -> int:
    """Bits of one position in a layer of ``numel`` weights."""
    return max(1, (numel - 1).bit_length())


def positions_tensor(numel: int, kept: int) -> tuple[str, str, tuple[int, ...]]:
    """``(key, dtype, shape)`` of where a pruned layer's ``kept`` weights are: a bitmask or the
    list of positions, whichever is smaller."""
    ib = index_bits(numel)
    if kept * ib < numel:
        return "index", "U8", (-(-kept * ib // 8),)
    return "mask", "U8", (-(-numel // 8),)


def layer_tensors(layer: "LayerInfo", choice: "Choice") -> list[tuple[str, str, tuple[int, ...]]]:
    """``(key suffix, dtype, shape)`` of every tensor a checkpoint stores for one layer."""
    numel = int(layer.params)
    kept = kept_count(numel, choice.prune)
    rows = int(layer.weight_shape[0]) if layer.weight_shape else 1
    out: list[tuple[str, str, tuple[int, ...]]] = []
    if is_float(choice.w_bits):
        if choice.prune <= 0:
            return [("weight", "F32", tuple(int(d) for d in layer.weight_shape) or (numel,))]
        out.append(("weight.values", "F32", (kept,)))
    else:
        fmt, bits = code_format(choice.w_bits)
        out.append(("weight.codes", *codes_tensor(kept, fmt, bits)))
        groups = group_count(numel // max(rows, 1), choice.group)
        scale_shape = (rows,) if choice.group is None else (rows, groups)
        out.append(("weight.scale", "F16", scale_shape))
        if choice.zero_point:
            out.append(("weight.zeros", *codes_tensor(rows * (groups if choice.group is not None else 1), fmt, bits)))
    if choice.prune > 0:
        key, dtype, shape = positions_tensor(numel, kept)
        out.append((f"weight.{key}", dtype, shape))
    return out


def header_entry_bytes(key: str, dtype: str, shape: Sequence[int], offset_digits: int) -> int:
    """Bytes of one tensor's entry in a safetensors header (compact JSON and its comma).

    Example:
        >>> header_entry_bytes("fc.bias", "F32", (10,), 3)
        64
    """
    stand_in = int("9" * max(1, offset_digits))
    entry = json.dumps({key: {"dtype": dtype, "shape": list(shape), "data_offsets": [stand_in, stand_in]}},
                       separators=(",", ":"))
    return len(entry) - 2 + 1   # without the object's braces, with the comma between entries


def nbytes(dtype: str, shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * DTYPE_BYTES[dtype]


def layer_bytes(layer: "LayerInfo", choice: "Choice", offset_digits: int) -> int:
    """One layer's bytes in a checkpoint file: its tensors and their header entries."""
    return tensors_bytes(layer, layer_tensors(layer, choice), offset_digits)


def tensors_bytes(layer: "LayerInfo", tensors: Iterable[tuple[str, str, Sequence[int]]],
                  offset_digits: int | None) -> int:
    """Bytes of ``layer``'s ``tensors`` in a checkpoint: their data, and their header entries
    when ``offset_digits`` is given (None: the data alone, the accounting without a layout)."""
    return sum(nbytes(d, s) + (header_entry_bytes(f"{layer.name}.{k}", d, s, offset_digits)
                               if offset_digits is not None else 0)
               for k, d, s in tensors)


def salient_count(layer: "LayerInfo", choice: "Choice", fraction: float) -> int:
    """PB-LLM salient weights of a 1/1.58-bit layer: ``round(fraction * params)`` of the largest
    |w| (:func:`autocomp.evaluators._binary.salient_mask`), at most the weights pruning keeps;
    0 for any other choice.

    Example:
        >>> from autocomp.policy import Choice
        >>> from autocomp.profile import LayerInfo
        >>> l = LayerInfo("fc", "Linear", (64, 256), 64 * 256, 0, 0, (256,), (64,), 0)
        >>> salient_count(l, Choice(1.58, 8), 0.02), salient_count(l, Choice(4, 8), 0.02)
        (328, 0)
    """
    w = float(choice.w_bits)
    if fraction <= 0 or not (w == 1 or abs(w - TERNARY_BITS) < 1e-6):
        return 0
    numel = int(layer.params)
    return min(int(round(fraction * numel)), kept_count(numel, choice.prune))


def salient_tensors(layer: "LayerInfo", count: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(key suffix, dtype, shape)`` of what a checkpoint adds for ``count`` salient weights: the
    8-bit values, one fp16 scale per output channel, and their positions (a bitmask or the list of
    positions, whichever is smaller, as for pruned weights: :func:`positions_tensor`).

    Example:
        >>> from autocomp.profile import LayerInfo
        >>> l = LayerInfo("fc", "Linear", (64, 256), 64 * 256, 0, 0, (256,), (64,), 0)
        >>> salient_tensors(l, 328)
        [('weight.salient.values', 'I8', (328,)), ('weight.salient.scale', 'F16', (64,)), ('weight.salient.index', 'U8', (574,))]
    """
    if count <= 0:
        return []
    numel = int(layer.params)
    rows = int(layer.weight_shape[0]) if layer.weight_shape else 1
    key, dtype, shape = positions_tensor(numel, count)
    return [("weight.salient.values", "I8", (count,)), ("weight.salient.scale", "F16", (rows,)),
            (f"weight.salient.{key}", dtype, shape)]


_TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def other_tensors_bytes(model: "torch.nn.Module", layer_weights: Iterable[str], offset_digits: int) -> int:
    """Bytes a checkpoint spends on the state-dict tensors that are not in ``layer_weights`` (the
    quantizable layers' weights and their tied aliases), a tensor two names share counted once,
    plus the file's frame.

    Example:
        >>> import torch
        >>> other_tensors_bytes(torch.nn.Linear(4, 2), ["weight"], 3) - FRAME_BYTES  # bias: 8 B + its entry
        68
    """
    skip = set(layer_weights)
    seen, total = set(), FRAME_BYTES
    for key, v in model.state_dict(keep_vars=True).items():
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if key in skip or (ident in seen and v.numel()):
            continue
        seen.add(ident)
        dtype = _TORCH_DTYPES.get(str(v.dtype).removeprefix("torch."), "F32")
        total += v.numel() * v.element_size() + header_entry_bytes(key, dtype, tuple(v.shape), offset_digits)
    return total


def file_layout(model: "torch.nn.Module", layers: Sequence["LayerInfo"]) -> FileLayout:
    """The :class:`FileLayout` of ``model`` profiled as ``layers``."""
    weights = [f"{n}.weight" for l in layers for n in (l.name, *l.aliases)]
    fp32 = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    digits = len(str(max(fp32, 1)))
    return FileLayout(other_tensors_bytes(model, weights, digits), digits)
