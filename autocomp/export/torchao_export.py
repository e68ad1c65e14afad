"""Export format ``torchao``: a policy as torchao's per-layer configs, and optionally the model
torchao quantizes with them.

A directory:

* ``torchao_config.json``: per layer fqn, the choice, the nearest torchao config (class name and
  plain kwargs, :func:`autocomp.kernels.torchao_backend.torchao_plan`) and a note where its
  numerics differ from autocomp's; ``fqn_to_config``, the same configs as torchao's own
  ``config_to_dict`` (``torchao.core.config.config_from_dict`` reads each back); and
  ``unsupported``, the layers torchao cannot express (kept float, never silently changed).
* with ``apply``: ``model.safetensors``, the state dict of the model
  ``torchao.quantization.quantize_`` built, flattened by torchao's safetensors support (tensor
  subclasses as plain tensors plus JSON metadata: no pickle). Its weights start from the study's
  quantizer (the simulation's weights), so torchao's codes are autocomp's where its scale choice
  lands on the same grid. :func:`load_torchao` reads it back onto a freshly built model.

Example:
    >>> rep = export_torchao(model, policy, Path("out"), apply=True)      # doctest: +SKIP
    >>> qmodel = load_torchao(Path("out"), make_model())                   # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from autocomp.export import ExportJob
from autocomp.kernels.torchao_backend import (TorchaoPlan, Unsupported, require_torchao, torchao_model, torchao_plan,
                                              weight_only)
from autocomp.policy import Policy, apply as apply_policy

CONFIG, WEIGHTS = "torchao_config.json", "model.safetensors"
FORMAT = "autocomp.torchao"
FORMAT_VERSION = 1


def unsupported_table(plan: TorchaoPlan) -> list[str]:
    """The layers torchao cannot express, one text row each (empty when it takes them all)."""
    if not plan.unsupported:
        return []
    w = max(len(u.name) for u in plan.unsupported)
    c = max(len(u.choice) for u in plan.unsupported)
    rows = [f"{len(plan.unsupported)} layer(s) torchao cannot express (kept float):",
            f"  {'layer':<{w}}  {'choice':<{c}}  why"]
    rows += [f"  {u.name:<{w}}  {u.choice:<{c}}  {u.reason}" for u in plan.unsupported]
    return rows


def _state_dict_once(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with each shared tensor under its first name, and ``alias -> first name``
    (safetensors stores no tensor twice)."""
    seen: dict[Any, str] = {}
    out, tied = {}, {}
    for k, v in model.state_dict().items():
        ident = _identity(v)
        if ident in seen:
            tied[k] = seen[ident]
            continue
        seen[ident] = k
        out[k] = v
    return out, tied


def _identity(v: torch.Tensor) -> Any:
    # state_dict() hands out a fresh tensor per name: tied weights share storage, not the object
    if type(v) is not torch.Tensor and not isinstance(v, torch.nn.Parameter):
        return id(v)   # a torchao tensor subclass: its data lives in inner tensors
    if not v.numel():
        return id(v)
    return (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)


def export_torchao(model: torch.nn.Module, policy: Policy, out_dir: Path, apply: bool = False,
                   compressed: torch.nn.Module | None = None) -> dict[str, Any]:
    """Write ``policy`` as torchao configs into ``out_dir`` (and, with ``apply``, torchao's model).

    Args:
        model: the float model.
        policy: the policy exported.
        out_dir: an existing (empty) directory.
        apply: also quantize a copy with ``quantize_`` and save its state dict (safetensors).
        compressed: the model with the policy's weights (inputs float) to quantize; default
            :func:`autocomp.policy.apply` of the weight-only policy (round to nearest).

    Returns:
        The JSON document written, plus ``bytes`` (of the safetensors file, with ``apply``).
    """
    require_torchao()
    import torchao
    from torchao.core.config import config_to_dict

    plan = torchao_plan(model, policy)
    doc: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "torchao_version": torchao.__version__,
                           "torch_version": torch.__version__, **plan.to_dict(),
                           "fqn_to_config": {l.name: config_to_dict(cfg) for l, cfg in
                                             zip(plan.quantized, plan.configs().fqn_to_config.values())}}
    if apply:
        from safetensors.torch import save_file
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        src = compressed if compressed is not None else apply_policy(model, weight_only(policy))
        qmodel = torchao_model(src, plan, model)
        sd, tied = _state_dict_once(qmodel)
        data, meta = flatten_tensor_state_dict(sd)
        meta["autocomp_tied"] = json.dumps(tied)
        save_file({k: v.contiguous() for k, v in data.items()}, str(out_dir / WEIGHTS), metadata=meta)
        doc["weights"] = WEIGHTS
        doc["bytes"] = (out_dir / WEIGHTS).stat().st_size
        doc["tied"] = tied
    elif not plan.quantized and plan.unsupported:
        torchao_model(model, plan)      # raises: torchao cannot express any layer
    (out_dir / CONFIG).write_text(json.dumps(doc, indent=1))
    return doc


def load_torchao(out_dir: Path, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (freshly built, float) with the state dict :func:`export_torchao` saved assigned
    into it: its layers become torchao's tensor subclasses. Loading runs no stored code."""
    require_torchao()
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    path = Path(out_dir) / WEIGHTS
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    tied = json.loads(meta.pop("autocomp_tied", "{}"))
    sd, left = unflatten_tensor_state_dict(load_file(str(path)), meta)
    sd = {**left, **sd}
    for alias, first in tied.items():
        sd[alias] = sd[first]
    model.load_state_dict(sd, assign=True)
    for alias, first in tied.items():   # assign=True gave each name its own parameter: tie them again
        mod, _, attr = alias.rpartition(".")
        src, _, src_attr = first.rpartition(".")
        setattr(model.get_submodule(mod), attr, getattr(model.get_submodule(src), src_attr))
    return model.eval()


def write_torchao(job: ExportJob, path: Path) -> str:
    """The registry's writer: the study's quantizer gives the weights torchao starts from."""
    apply = bool(getattr(job, "apply", False))
    compressed = None
    if apply and job.quantizer is not None:
        compressed = job.quantizer.apply(job.model, weight_only(job.policy), None, job.stats)
    doc = export_torchao(job.model, job.policy, Path(path), apply, compressed)
    plan_n = sum(1 for l in doc["layers"] if l["config"])
    rows = unsupported_table(TorchaoPlan(doc["policy_id"], unsupported=[Unsupported(**u) for u in doc["unsupported"]]))
    what = f"torchao configs for {plan_n} of {len(doc['layers'])} layers"
    if apply:
        what += f" and torchao's quantized model ({doc['bytes']} bytes, safetensors)"
    return "\n".join(rows + [f"wrote {what} of policy {job.policy.id}"])

