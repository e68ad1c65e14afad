"""Profile a model: every quantizable layer (Conv1d/Conv2d/Linear, transformers' Conv1D) with its
parameter count, MACs measured from a real forward pass, and activation shapes.

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

from autocomp.modules import batch_size, call_model, quantizable_layers, weight_of
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
    version: int = LAYER_INFO_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerInfo":
        check_version("LayerInfo", d, LAYER_INFO_VERSION)
        return cls(
            name=d["name"], kind=d["kind"], weight_shape=tuple(d["weight_shape"]),
            params=int(d["params"]), bias_params=int(d.get("bias_params", 0)),
            macs=int(d["macs"]), in_shape=tuple(d["in_shape"]), out_shape=tuple(d["out_shape"]),
            index=int(d["index"]),
        )


def _macs(module: torch.nn.Module, out: torch.Tensor, batch: int) -> int:
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
    for n, m in named:
        handles.append(m.register_forward_hook(hook_for(n)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, sample)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    mods = dict(named)
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
        ))
    return layers


def model_param_count(model: torch.nn.Module) -> int:
    """All parameters (quantizable weights, biases, norms, embeddings)."""
    return sum(p.numel() for p in model.parameters())
