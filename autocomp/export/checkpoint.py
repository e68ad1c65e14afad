"""Export format ``checkpoint``: a policy's compressed weights, at the size the front promised.

A directory of three files, none of them a pickle:

* ``model.safetensors``: per quantized layer ``NAME.weight.codes`` (the kept codes at ``w_bits``
  each), ``.scale`` (fp16, per channel ``[N]`` or per group ``[N, G]``), ``.zeros`` (asymmetric)
  and ``.mask`` / ``.index`` (pruned layers; see :mod:`autocomp.export.codes`); every other
  parameter and buffer of the compressed model under its state-dict name, in its dtype (a tensor
  two names share is stored once).
* ``policy.json``: the policy as ``front export --format policy`` writes it.
* ``manifest.json``: format version, autocomp and torch versions, the study's model spec and
  quantizer, the policy's quality and costs on the front, one entry per layer (choice, module
  kind and shape, stored format, activation range, tied aliases) and the bytes by kind.

Weights come from the study's quantizer (:meth:`autocomp.quantizers.Quantizer.apply`, the
simulation itself); the codes are checked against it before anything is written.
:func:`autocomp.export.load.load_compressed` reads the directory back onto kernel modules.

Example:
    >>> summary = write_checkpoint(job, tmp_dir)          # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from autocomp.errors import AutocompError
from autocomp.export import ExportJob
from autocomp.export.codes import encode_layer
from autocomp.kernels.modules import weight_qparams
from autocomp.modules import is_embedding, is_transposed, tied_aliases, weight_of
from autocomp.policy import Choice, input_range, policy_modules
from autocomp.quant import is_float, prune_mask

FORMAT = "autocomp.checkpoint"
FORMAT_VERSION = 1
WEIGHTS, POLICY, MANIFEST = "model.safetensors", "policy.json", "manifest.json"


def module_kind(module: torch.nn.Module) -> str:
    """The manifest's word for a layer's module type (what the loader rebuilds it as)."""
    if is_embedding(module):
        return "embedding"
    if is_transposed(module):
        return "conv1d_transposed"
    return type(module).__name__.lower()


def _qparams(src: torch.Tensor, choice: Choice):
    codes, scale, zeros = weight_qparams(src, choice)
    if choice.group is not None:   # the kernels' [G, N] back to the stored [N, G]
        scale = scale.t().contiguous()
        zeros = None if zeros is None else zeros.t().contiguous()
    mask = prune_mask(src, choice.prune) if choice.prune > 0 else None
    return codes, scale, zeros, mask


def _dequantize(codes, scale, zeros, mask, choice: Choice) -> torch.Tensor:
    k = codes.shape[1]
    g = k if choice.group is None else int(choice.group)
    expand = (lambda t: t[:, None]) if scale.dim() == 1 else (lambda t: t.repeat_interleave(g, dim=1)[:, :k])
    w = (codes - (expand(zeros) if zeros is not None else 0)) * expand(scale)
    return w if mask is None else w * mask


def stored_codes(name: str, float_mod: torch.nn.Module, sim_mod: torch.nn.Module, choice: Choice,
                 quantizer_spec: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Signed codes ``[N, K]``, scales ``[N]`` / ``[N, G]``, zero points and prune mask of one layer.

    Round-to-nearest codes of the float weight when they reproduce the simulated weight (``rtn``,
    and quantizers that only correct biases); else those of the weight the quantizer produced
    (GPTQ-like), which must reproduce it too, or the export fails naming the layer.
    """
    sim_w = weight_of(sim_mod).detach().float()
    sim_w = sim_w.reshape(sim_w.shape[0], -1)
    float_w = weight_of(float_mod).detach().float().reshape(sim_w.shape)
    scale_ref = max(float(sim_w.abs().max()), 1e-30)
    err = float("inf")
    for src in (float_w, sim_w):
        q = _qparams(src, choice)
        err = float((_dequantize(*q, choice) - sim_w).abs().max()) / scale_ref
        if err <= 1e-5:
            return q
    raise AutocompError(f"layer {name!r}: the {quantizer_spec} weights are not representable as {choice.key} "
                        f"codes and scales (max relative error {err:.2g})")


def write_checkpoint(job: ExportJob, directory: Path) -> str:
    """Write the checkpoint of ``job.policy`` into the (empty) ``directory``; returns the summary line."""
    from safetensors.torch import save_file

    import autocomp

    directory = Path(directory)
    q = job.quantizer
    calib = job.workload.calib if job.workload is not None else None
    sim = q.apply(job.model, job.policy, job.act_ranges, job.stats, batches=calib)
    sim_mods = dict(sim.named_modules())
    aliases = tied_aliases(sim)
    tensors: dict[str, torch.Tensor] = {}
    layers: list[dict[str, Any]] = []
    consumed: set[str] = set()
    counted = {"codes": 0, "zeros": 0, "scales": 0}
    uncounted = {"channel_scales": 0, "pruning": 0}
    for name, choice, fmod in policy_modules(job.model, job.policy):
        smod = sim_mods[name]
        entry: dict[str, Any] = {"name": name, "choice": choice.key, "kind": module_kind(fmod),
                                 "weight_shape": list(fmod.weight.shape), "aliases": aliases.get(name, []),
                                 "act_range": None}
        rng = None if is_embedding(fmod) else input_range(job.act_ranges, name, choice)
        if rng is not None:
            entry["act_range"] = [float(rng[0]), float(rng[1])]
        if not is_float(choice.w_bits):
            codes, scale, zeros, mask = stored_codes(name, fmod, smod, choice, q.spec)
            t, desc = encode_layer(codes, scale, zeros, choice, mask)
            entry.update(desc)
            for k, v in t.items():
                tensors[f"{name}.weight.{k}"] = v
            consumed |= {f"{n}.weight" for n in [name, *aliases.get(name, [])]}
            counted["codes"] += t["codes"].nbytes
            counted["zeros"] += t["zeros"].nbytes if "zeros" in t else 0
            if choice.group is not None or choice.zero_point:   # costs.meta_bits counts these
                counted["scales"] += t["scale"].nbytes
            else:
                uncounted["channel_scales"] += t["scale"].nbytes
            uncounted["pruning"] += sum(t[k].nbytes for k in ("mask", "index") if k in t)
        layers.append(entry)
    params = {n for n, _ in sim.named_parameters(remove_duplicate=False)}
    shared: dict[str, str] = {}
    first: dict[tuple, str] = {}
    floats = {"parameters": 0, "buffers": 0}
    for key, v in sim.state_dict(keep_vars=False).items():
        if key in consumed:
            continue
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if ident in first and v.numel():   # empty tensors share no data, whatever their pointer
            shared[key] = first[ident]
            continue
        first[ident] = key
        tensors[key] = v.detach().contiguous().clone()
        floats["parameters" if key in params else "buffers"] += v.nbytes
    save_file(tensors, str(directory / WEIGHTS))
    uncounted["buffers"] = floats.pop("buffers")
    nbytes = {"counted": {**counted, **floats}, "not_counted": uncounted}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "autocomp_version": autocomp.__version__, "torch_version": torch.__version__,
        "study": job.study, "policy_id": job.policy.id, "model": job.model_spec, "quantizer": q.spec,
        "front": job.front_point, "layers": layers, "shared": shared, "bytes": nbytes,
    }
    (directory / POLICY).write_text(json.dumps(job.policy_doc, indent=1))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return f"wrote checkpoint of policy {job.policy.id} ({len(job.policy)} layers): " + \
        size_line((directory / WEIGHTS).stat().st_size, nbytes, (job.front_point or {}).get("size"))


def size_line(file_bytes: int, nbytes: dict, front_size: float | None) -> str:
    """The checkpoint's size against the front's: what the cost model counts, then the rest.

    Example:
        >>> size_line(1100, {"counted": {"codes": 990}, "not_counted": {"buffers": 10}}, 1000.0)
        'model.safetensors 1100 B; counted as the cost model does 990 B (front size 1000 B, -1.00 %); not counted: buffers 10 B, header 100 B'
    """
    counted = sum(nbytes["counted"].values())
    rest = nbytes["not_counted"]
    header = file_bytes - counted - sum(rest.values())
    vs = f" (front size {front_size:.0f} B, {100.0 * (counted / front_size - 1):+.2f} %)" if front_size else ""
    extra = ", ".join(f"{k.replace('_', ' ')} {v} B" for k, v in {**rest, "header": header}.items() if v)
    return f"{WEIGHTS} {file_bytes} B; counted as the cost model does {counted} B{vs}; not counted: {extra}"
