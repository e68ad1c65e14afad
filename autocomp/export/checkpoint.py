"""Export format ``checkpoint``: a policy's compressed weights, at the size the front promised.

A directory of three files, none of them a pickle:

* ``model.safetensors``: per quantized layer ``NAME.weight.codes`` (the kept codes at ``w_bits``
  each), ``.scale`` (fp16, per channel ``[N]`` or per group ``[N, G]``), ``.zeros`` (asymmetric)
  and ``.mask`` / ``.index`` (pruned layers; see :mod:`autocomp.export.codes`); a pruned float
  layer as ``NAME.weight.values`` (its kept fp32 weights) and ``.mask`` / ``.index``; every other
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
from autocomp.export.codes import encode_layer, encode_positions
from autocomp.modules import is_embedding, is_transposed, tied_aliases, weight_of
from autocomp.policy import Choice, input_range, policy_modules
from autocomp.quant import is_float, is_token_range, prune_mask

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


def stored_codes(name: str, float_mod: torch.nn.Module, sim_mod: torch.nn.Module, choice: Choice,
                 quantizer_spec: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Signed codes ``[N, K]``, scales ``[N]`` / ``[N, G]``, zero points and prune mask of one layer.

    The codes reproduce the simulated weight (:func:`autocomp.kernels.from_quantizer.layer_qparams`:
    round-to-nearest codes of the float weight for ``rtn`` and bias-only quantizers, else those of
    the quantizer's weight, else its grid read off the weight, as GPTQ's group-wise weights need),
    or the export fails naming the layer.
    """
    from autocomp.kernels.from_quantizer import layer_qparams

    sim_w = weight_of(sim_mod).detach().float()
    sim_w = sim_w.reshape(sim_w.shape[0], -1)
    float_w = weight_of(float_mod).detach().float().reshape(sim_w.shape)
    try:
        codes, scale, zeros = layer_qparams(name, float_w, sim_w, choice)
    except ValueError as e:
        raise AutocompError(f"{quantizer_spec}: {e}") from None
    if choice.group is not None:   # the kernels' [G, N] back to the stored [N, G]
        scale = scale.t().contiguous()
        zeros = None if zeros is None else zeros.t().contiguous()
    # the pruned weights are exact zeros of the simulated weight; which zeros count as pruned
    # does not change a value (a pruned position decodes to 0 too), only the count must be exact
    mask = kept_mask(name, sim_w, choice.prune) if choice.prune > 0 else None
    return codes, scale, zeros, mask


def kept_mask(name: str, sim_w: torch.Tensor, prune: float) -> torch.Tensor:
    """Which weights of a pruned layer are kept: the largest ``1 - prune`` of the simulated
    weight, whose pruned entries are exact zeros (whichever mask the quantizer chose: magnitude,
    or SparseGPT's); one error line when a dropped position holds a weight."""
    mask = prune_mask(sim_w, prune)
    if bool((sim_w[~mask] != 0).any()):
        raise AutocompError(f"layer {name!r}: the simulated weight has fewer zeros than its pruning ratio {prune:g}")
    return mask


def write_checkpoint(job: ExportJob, directory: Path) -> str:
    """Write the checkpoint of ``job.policy`` into the (empty) ``directory``; returns the summary line."""
    from safetensors.torch import save_file

    import autocomp

    directory = Path(directory)
    q = job.quantizer
    calib = job.workload.calib if job.workload is not None else None
    results: dict = {}
    sim = q.apply(job.model, job.policy, job.act_ranges, job.stats, batches=calib, results=results)
    scaled = [n for n, r in results.items() if getattr(r, "input_scale", None) is not None]
    if scaled:   # AWQ's per-input-channel scales: not in this format (nor in the cost model's size)
        raise AutocompError(f"layer {scaled[0]!r}: {q.spec} scales its input per channel, which checkpoint format "
                            f"version {FORMAT_VERSION} cannot store; export --format torchao or onnx, or a study "
                            "without awq")
    sim_mods = dict(sim.named_modules())
    aliases = tied_aliases(sim)
    tensors: dict[str, torch.Tensor] = {}
    layers: list[dict[str, Any]] = []
    consumed: set[str] = set()
    nbytes = {"codes": 0, "zeros": 0, "scales": 0, "pruning": 0}
    for name, choice, fmod in policy_modules(job.model, job.policy):
        smod = sim_mods[name]
        entry: dict[str, Any] = {"name": name, "choice": choice.key, "kind": module_kind(fmod),
                                 "weight_shape": list(fmod.weight.shape), "aliases": aliases.get(name, []),
                                 "act_range": None}
        rng = None if is_embedding(fmod) else input_range(job.act_ranges, name, choice)
        if rng is not None:   # a per-token input has no stored range: it is measured at run time
            entry["act_range"] = "token" if is_token_range(*rng) else [float(rng[0]), float(rng[1])]
        if not is_float(choice.w_bits):
            codes, scale, zeros, mask = stored_codes(name, fmod, smod, choice, q.spec)
            t, desc = encode_layer(codes, scale, zeros, choice, mask)
        elif choice.prune > 0:   # a pruned float layer: the kept values and where they are
            t, desc = sparse_float(name, weight_of(smod).detach(), choice.prune)
        else:
            layers.append(entry)
            continue
        entry.update(desc)
        for k, v in t.items():
            tensors[f"{name}.weight.{k}"] = v
        consumed |= {f"{n}.weight" for n in [name, *aliases.get(name, [])]}
        for k, v in t.items():
            nbytes[{"values": "codes", "scale": "scales", "mask": "pruning", "index": "pruning"}.get(k, k)] += v.nbytes
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
    nbytes.update(floats)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "autocomp_version": autocomp.__version__, "torch_version": torch.__version__,
        "study": job.study, "policy_id": job.policy.id, "model": job.model_spec, "quantizer": q.spec,
        "front": job.front_point, "layers": layers, "shared": shared, "bytes": nbytes,
        "front_size_counts": "all" if job.full_size else "codes and group metadata",
    }
    (directory / POLICY).write_text(json.dumps(job.policy_doc, indent=1))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return f"wrote checkpoint of policy {job.policy.id} ({len(job.policy)} layers): " + \
        size_line((directory / WEIGHTS).stat().st_size, nbytes, (job.front_point or {}).get("size"), job.full_size)


def sparse_float(name: str, sim_w: torch.Tensor, prune: float) -> tuple[dict[str, torch.Tensor], dict]:
    """A pruned float layer as its kept fp32 values and their positions
    (:func:`autocomp.layout.layer_tensors`)."""
    mask = kept_mask(name, sim_w.reshape(-1), prune)
    key, pos, fmt = encode_positions(mask)
    values = sim_w.reshape(-1)[mask].float().contiguous()
    return {"values": values, key: pos}, {"codes": "float32", "rows": int(sim_w.shape[0]),
                                          "cols": int(sim_w[0].numel()), "kept": int(values.numel()),
                                          "pruning": fmt}


def size_line(file_bytes: int, nbytes: dict, front_size: float | None, full_size: bool = True) -> str:
    """The checkpoint's size against the front's: the stored tensors, then the file's header.

    Example:
        >>> size_line(1100, {"codes": 990, "buffers": 10}, 1000.0)
        'model.safetensors 1100 B (front size 1000 B, +10.00 %): tensors 1000 B (+0.00 %), header 100 B'
    """
    payload = sum(nbytes.values())
    header = file_bytes - payload
    if not front_size:
        return f"{WEIGHTS} {file_bytes} B: tensors {payload} B, header {header} B"
    vs = lambda b: f"{100.0 * (b / front_size - 1):+.2f} %"
    line = (f"{WEIGHTS} {file_bytes} B (front size {front_size:.0f} B, {vs(file_bytes)}): "
            f"tensors {payload} B ({vs(payload)}), header {header} B")
    if not full_size:
        line += "; this study's size counts codes and group metadata only (it predates checkpoints)"
    return line
