"""Profile a model: every quantizable layer (Conv1d/Conv2d/Linear/Embedding, transformers'
Conv1D) with its parameter count, MACs measured from a real forward pass, activation shapes, its
role (conv, linear, embedding, lm_head) and the modules tied to its weight.

An embedding lookup has no MACs; a tied layer (GPT-2's ``transformer.wte`` / ``lm_head``) is one
entry whose MACs are those of every use (the head's matmul) and whose weight is counted once.

Example:
    >>> import torch
    >>> from autocomp.profile import profile_model
    >>> m = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> [l.name for l in profile_model(m, torch.zeros(1, 8))]
    ['0', '2']
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch

from autocomp.modules import (WEIGHT_ONLY_ROLES, batch_size, call_model, inspecting, is_embedding, layer_roles,
                              quantizable_layers, tied_aliases, weight_of)
from autocomp.values import check_version

LAYER_INFO_VERSION = 1


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer.

    Attributes:
        name: qualified module name (``model.named_modules()``).
        kind: module class name.
        weight_shape: shape with output channels first.
        params: weight elements (bias excluded: it stays in float).
        bias_params: bias elements.
        macs: multiply-accumulates per sample, summed over every call in one forward pass.
        in_shape / out_shape: activation shapes per sample at the first call.
        index: position in forward execution order.
        roles: ``conv``, ``linear``, ``embedding`` or ``lm_head``; a tied layer lists the roles of
            every module sharing its weight, its own first.
        aliases: the other modules sharing this weight (a policy names the layer, never these).
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    params: int
    bias_params: int
    macs: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    index: int
    roles: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    version: int = LAYER_INFO_VERSION

    @property
    def role(self) -> str:
        """The module's own role (from its kind for a profile stored before roles existed)."""
        return self.roles[0] if self.roles else _plain_role(self.kind)

    @property
    def weight_only(self) -> bool:
        """Embeddings and heads: choices for them keep the input in float."""
        return any(r in WEIGHT_ONLY_ROLES for r in self.roles)

    def to_dict(self) -> dict[str, Any]:
        # A plain conv/linear layer is stored as it was before roles existed, so profiles stored
        # by earlier versions compare equal to a fresh profile of the same model.
        d = asdict(self)
        if not self.aliases and self.roles in ((), (_plain_role(self.kind),)):
            d.pop("roles")
            d.pop("aliases")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerInfo":
        check_version("LayerInfo", d, LAYER_INFO_VERSION)
        return cls(
            name=d["name"], kind=d["kind"], weight_shape=tuple(d["weight_shape"]),
            params=int(d["params"]), bias_params=int(d.get("bias_params", 0)),
            macs=int(d["macs"]), in_shape=tuple(d["in_shape"]), out_shape=tuple(d["out_shape"]),
            index=int(d["index"]), roles=tuple(d.get("roles", ())) or (_plain_role(d["kind"]),),
            aliases=tuple(d.get("aliases", ())),
        )


def _plain_role(kind: str) -> str:
    """The role a conv or linear layer has when nothing else (embedding, head) is known of it."""
    return "conv" if kind.startswith("Conv") and kind != "Conv1D" else "linear"


def _macs(module: torch.nn.Module, out: torch.Tensor, batch: int) -> int:
    if is_embedding(module):
        return 0  # a table lookup
    w = weight_of(module)
    return int(out.numel() // batch * (w.numel() // w.shape[0]))  # outputs x fan-in (kernel included)


def profile_model(model: torch.nn.Module, sample: Any) -> list[LayerInfo]:
    """Run one forward pass on ``sample`` and describe every quantizable layer.

    Args:
        model: any ``torch.nn.Module``.
        sample: a tensor (batch first), a tuple of positional inputs, or a dict of keyword inputs.

    Returns:
        Layers in forward execution order; layers never called are appended with ``macs=0``.
    """
    seen: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    handles = []
    batch = batch_size(sample)

    def hook_for(name: str):
        def hook(mod, args, out):
            x = args[0] if args else None
            if name not in seen:
                order.append(name)
                seen[name] = {
                    "macs": 0,
                    "in_shape": tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else (),
                    "out_shape": tuple(out.shape[1:]),
                }
            seen[name]["macs"] += _macs(mod, out, batch)
        return hook

    named = quantizable_layers(model)
    aliases = tied_aliases(model)
    modules = dict(model.named_modules())
    for n, m in named:
        handles.append(m.register_forward_hook(hook_for(n)))
        # Every use of a tied weight counts towards the one layer (the head's matmul has MACs).
        handles += [modules[a].register_forward_hook(hook_for(n)) for a in aliases.get(n, [])]
    with inspecting(model, handles):
        call_model(model, sample)
    mods = dict(named)
    roles = layer_roles(model)
    names = order + [n for n, _ in named if n not in seen]
    layers = []
    for i, n in enumerate(names):
        m = mods[n]
        w = weight_of(m)
        info = seen.get(n, {"macs": 0, "in_shape": (), "out_shape": ()})
        layers.append(LayerInfo(
            name=n, kind=type(m).__name__, weight_shape=tuple(w.shape), params=int(w.numel()),
            bias_params=int(m.bias.numel()) if getattr(m, "bias", None) is not None else 0,
            macs=int(info["macs"]), in_shape=info["in_shape"], out_shape=info["out_shape"], index=i,
            roles=roles[n], aliases=tuple(aliases.get(n, ())),
        ))
    return layers


def model_param_count(model: torch.nn.Module) -> int:
    """All parameters (quantizable weights, biases, norms, embeddings)."""
    return sum(p.numel() for p in model.parameters())

