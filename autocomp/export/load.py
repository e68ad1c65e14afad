"""Read an autocomp checkpoint back: a kernel-backed model, without running any stored code.

:func:`load_compressed` builds the float model from the caller's factory (the architecture is
code the user owns, never something the checkpoint carries), loads the float parameters and
buffers, and replaces every quantized layer: ``Linear`` / ``Conv1D`` by
:class:`~autocomp.kernels.modules.QuantLinear`, ``Conv2d`` by
:class:`~autocomp.kernels.modules.QuantConv2d`, an embedding by :class:`QuantEmbedding` (a tied
LM head by a ``QuantLinear`` over the same codes). Only safetensors and JSON are read;
``torch.load`` is never called. A manifest that does not match the files or the model (another
format version, a layer missing, a shape that differs) is one :class:`AutocompError` line.

Example:
    >>> import autocomp
    >>> model = autocomp.load_compressed("ckpt/", lambda: load_workload("digits").model())   # doctest: +SKIP
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from autocomp.errors import AutocompError
from autocomp.export.checkpoint import FORMAT, FORMAT_VERSION, MANIFEST, WEIGHTS, module_kind
from autocomp.export.codes import decode_layer
from autocomp.kernels.modules import QuantConv2d, QuantLinear
from autocomp.policy import ActFakeQuant, Choice
from autocomp.quant import TOKEN_RANGE, is_float


class QuantEmbedding(torch.nn.Module):
    """An embedding table stored as integer codes with per-row (or per-group) scales; a lookup
    dequantizes only the rows it reads.

    Example:
        >>> codes = torch.tensor([[1, -2], [3, 0]])
        >>> e = QuantEmbedding(codes, torch.tensor([0.5, 1.0]), None, None)
        >>> e(torch.tensor([1, 0])).tolist()
        [[3.0, 0.0], [0.5, -1.0]]
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zeros: torch.Tensor | None, group: int | None,
                 padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = codes.shape
        self.group, self.padding_idx = group, padding_idx
        self.register_buffer("codes", codes.to(torch.int16 if int(codes.abs().max()) > 127 else torch.int8))
        self.register_buffer("scale", (scale if scale.dim() == 2 else scale[:, None]).float())
        self.register_buffer("zeros", None if zeros is None else (zeros if zeros.dim() == 2 else zeros[:, None]).float())

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        g = self.embedding_dim if self.group is None else self.group
        return t.repeat_interleave(g, dim=-1)[..., : self.embedding_dim]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        c = F.embedding(ids, self.codes).float()
        if self.zeros is not None:
            c = c - self._expand(F.embedding(ids, self.zeros))
        return c * self._expand(F.embedding(ids, self.scale))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, group={self.group}"


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The checked ``manifest.json`` of a checkpoint directory."""
    path = Path(directory) / MANIFEST
    try:
        man = json.loads(path.read_text())
    except FileNotFoundError:
        raise AutocompError(f"{directory} is not an autocomp checkpoint: no {MANIFEST}") from None
    except (OSError, ValueError) as e:
        raise AutocompError(f"cannot read {path}: {e}") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise AutocompError(f"{path} is not an autocomp checkpoint manifest")
    if man.get("format_version") != FORMAT_VERSION:
        raise AutocompError(f"{path}: checkpoint format version {man.get('format_version')!r}, this autocomp "
                            f"reads version {FORMAT_VERSION}")
    if not isinstance(man.get("layers"), list):
        raise AutocompError(f"{path}: no 'layers' list")
    return man


def _replace(root: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _quant_module(mod: torch.nn.Module, kind: str, codes: torch.Tensor, scale: torch.Tensor,
                  zeros: torch.Tensor | None, bias: torch.Tensor | None, choice: Choice,
                  act_range: tuple[float, float] | None, backend: str) -> torch.nn.Module:
    # the kernels take per-group scales [G, N] (one row per group along K)
    group = choice.group
    s = scale.t().contiguous() if group is not None else scale
    z = None if zeros is None else (zeros.t().contiguous() if group is not None else zeros)
    if kind == "embedding":
        return QuantEmbedding(codes, scale, zeros, group, mod.padding_idx)
    if kind == "conv2d":
        return QuantConv2d(codes, s, bias, choice, tuple(mod.weight.shape), mod.stride, mod.padding, mod.dilation,
                           mod.groups, act_range, group, "reference" if z is not None else backend, z)
    if kind in ("linear", "conv1d_transposed"):
        return QuantLinear(codes, s, bias, choice, act_range, group, "reference" if z is not None else backend, z)
    # no kernel module (Conv1d): the dequantized weight in the float module, input fake-quantized
    from autocomp.modules import set_weight

    g = codes.shape[1] if group is None else group
    ex = (lambda t: t[:, None]) if scale.dim() == 1 else (lambda t: t.repeat_interleave(g, dim=1)[:, : codes.shape[1]])
    w = (codes.float() - (ex(zeros) if zeros is not None else 0)) * ex(scale)
    set_weight(mod, w.reshape(mod.weight.shape))
    if bias is not None:
        mod.bias = torch.nn.Parameter(bias.clone())
    if act_range is not None:
        mod.register_forward_pre_hook(ActFakeQuant(act_range[0], act_range[1], int(choice.a_bits)))
    return mod


def _sparse_float(mod: torch.nn.Module, name: str, part: dict, entry: dict) -> torch.nn.Module:
    from autocomp.export.codes import decode_positions
    from autocomp.modules import set_weight

    try:
        numel, kept = int(entry["rows"]) * int(entry["cols"]), int(entry["kept"])
        mask = decode_positions(part, str(entry["pruning"]), numel, kept)
        values = part["values"].float()
        if values.numel() != kept or int(mask.sum()) != kept or numel != mod.weight.numel():
            raise ValueError(f"{values.numel()} stored values do not fill a {list(mod.weight.shape)} weight")
    except (KeyError, ValueError, RuntimeError, IndexError) as e:
        raise AutocompError(f"layer {name!r}: layer data does not match its manifest entry: {e}") from None
    w = torch.zeros(numel)
    w[mask] = values
    set_weight(mod, w.reshape(mod.weight.shape).to(mod.weight.dtype))
    return mod


def load_compressed(directory: str | Path, model_factory: Callable[[], torch.nn.Module],
                    backend: str = "auto") -> torch.nn.Module:
    """The kernel-backed model a checkpoint directory stores.

    Args:
        directory: written by ``autocomp front export --format checkpoint``.
        model_factory: builds the float model (same architecture; its weights are replaced).
        backend: ``auto`` or a backend forced on every kernel module (see :mod:`autocomp.kernels.modules`).

    Returns:
        The model in eval mode.

    Raises:
        AutocompError: the directory is no checkpoint of this format version, or does not match
            the model (a layer missing, another shape, a tensor missing).

    Example:
        >>> m = load_compressed("ckpt/", my_model)                    # doctest: +SKIP
        >>> type(m.fc).__name__                                       # doctest: +SKIP
        'QuantLinear'
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    man = read_manifest(directory)
    try:
        tensors = load_file(str(Path(directory) / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise AutocompError(f"cannot read {Path(directory) / WEIGHTS}: {e}") from None
    # a factory may hand out one shared instance (``Workload.model``): never change it in place
    model = copy.deepcopy(model_factory())
    if not isinstance(model, torch.nn.Module):
        raise AutocompError(f"model_factory returned {type(model).__name__}, not a torch.nn.Module")
    mods = dict(model.named_modules())
    consumed: set[str] = set()
    built: list[tuple[str, torch.nn.Module]] = []
    sparse: set[str] = set()
    for entry in man["layers"]:
        name = entry.get("name")
        if name not in mods:
            raise AutocompError(f"checkpoint layer {name!r} is not in the model")
        mod = mods[name]
        if module_kind(mod) != entry.get("kind") or list(mod.weight.shape) != list(entry.get("weight_shape", [])):
            raise AutocompError(f"checkpoint layer {name!r} is a {entry.get('kind')} {entry.get('weight_shape')}, "
                                f"the model's is a {module_kind(mod)} {list(mod.weight.shape)}")
        choice = Choice.from_key(entry["choice"])
        rng = None
        if entry.get("act_range") == "token":
            rng = TOKEN_RANGE
        elif entry.get("act_range"):
            rng = tuple(entry["act_range"])
        prefix = f"{name}.weight."
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if is_float(choice.w_bits):
            if entry.get("pruning"):   # a pruned float layer: kept values at their positions
                _sparse_float(mod, name, part, entry)
                consumed |= {prefix + k for k in part}
                sparse.add(f"{name}.weight")
            if rng is not None:
                mod.register_forward_pre_hook(ActFakeQuant(rng[0], rng[1], int(choice.a_bits)))
            continue
        if "codes" not in part:
            raise AutocompError(f"checkpoint has no codes for layer {name!r}")
        try:
            codes, scale, zeros = decode_layer(part, entry)
        except AutocompError as e:
            raise AutocompError(f"layer {name!r}: {e}") from None
        consumed |= {prefix + k for k in part}
        bias = tensors.get(f"{name}.bias")
        consumed.add(f"{name}.bias")
        built.append((name, _quant_module(mod, entry["kind"], codes, scale, zeros, bias, choice, rng, backend)))
        for alias in entry.get("aliases", []):   # a tied LM head: the same codes, float input
            if alias not in mods:
                raise AutocompError(f"checkpoint layer {name!r} is tied to {alias!r}, which the model lacks")
            head = Choice(choice.w_bits, 32, choice.prune, choice.group, choice.zero_point)
            consumed.add(f"{alias}.bias")
            built.append((alias, _quant_module(mods[alias], "linear", codes, scale, zeros,
                                               tensors.get(f"{alias}.bias"), head, None, backend)))
    floats = {k: v for k, v in tensors.items() if k not in consumed}
    for alias, key in (man.get("shared") or {}).items():
        if key not in floats:
            raise AutocompError(f"checkpoint tensor {alias!r} shares {key!r}, which is missing")
        floats[alias] = floats[key]
    quantized = {f"{n}.{p}" for n, _ in built for p in ("weight", "bias")} | sparse
    expected = {k for k in model.state_dict() if k not in quantized}
    missing, extra = sorted(expected - set(floats)), sorted(set(floats) - expected)
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model does not"
        raise AutocompError(f"checkpoint {directory} does not match the model: it {what}")
    try:
        model.load_state_dict(floats, strict=False)
    except RuntimeError as e:
        raise AutocompError(f"checkpoint {directory} does not match the model: "
                            f"{str(e).strip().splitlines()[-1].strip()}") from None
    for name, new in built:
        if new is not mods[name]:
            _replace(model, name, new)
    return model.eval()
