"""Export format ``onnx``: the float graph with QuantizeLinear / DequantizeLinear carrying each
layer's bits and scales, checked by onnxruntime against the simulation (CNNs and encoders).

How a policy becomes ONNX (opset 21, TorchScript exporter: it runs offline; the dynamo exporter
needs onnxscript):

* weights: each compressed layer's weight initializer is replaced by its integer codes, scales
  (and zero points) feeding a ``DequantizeLinear`` whose output keeps the weight's name, so the
  exported graph is otherwise untouched. Per channel: ``axis=0``; group-wise: opset 21 block
  quantization (``axis=1, block_size=group``; a shorter last group is allowed). Codes are
  ``int4`` tensors for 1..4 bits (binary and ternary codes included), ``int8`` for 5..8, ``int16``
  above; pruned weights are code 0 (their zero point when asymmetric), stored densely.
* activations: a layer whose input is quantized gets ``QuantizeLinear -> DequantizeLinear``
  (uint8, the calibrated per-tensor scale and zero point) on its input. Below 8 bits a ``Clip`` to
  the ``2**bits`` codes' range goes first: the container is uint8, the grid is the policy's.
  16-bit activations stay float (listed in the report: below 1e-4 of the range apart).

:func:`check_onnx` runs the file in onnxruntime and compares with the simulation; the report
says where onnxruntime could not run it (an int4 block it lacks a kernel for, say).

Example:
    >>> rep = export_onnx(model, policy, sample, Path("out"), act_ranges=ranges)     # doctest: +SKIP
    >>> rep["check"]["max_rel_err"] < rep["check"]["tolerance"]                      # doctest: +SKIP
    True
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from autocomp.errors import AutocompError
from autocomp.export import ExportJob
from autocomp.modules import call_model, is_embedding, is_transposed
from autocomp.policy import Policy, apply as apply_policy, input_range, policy_modules
from autocomp.quant import act_qparams, is_float

MODEL, REPORT = "model.onnx", "onnx_report.json"
OPSET = 21
#: relative to max |simulated output|: float re-association, ties of round-half-even
TOLERANCE = 1e-3
MISSING = "onnx export needs onnx and onnxruntime, which are not installed: pip install 'autocomp[onnx]'"


def require_onnx():
    """``(onnx, onnxruntime)``, or one error line naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise AutocompError(MISSING) from None
    return onnx, onnxruntime


class _ActQDQ:
    """Forward pre-hook: the policy's input grid as an op the exporter writes as Q/DQ (and Clip)."""

    def __init__(self, lo: float, hi: float, bits: int):
        self.scale, self.zp, _, self.qmax = act_qparams(lo, hi, bits)

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        if self.qmax < 255:
            x = x.clamp((0 - self.zp) * self.scale, (self.qmax - self.zp) * self.scale)
        x = torch.fake_quantize_per_tensor_affine(x, self.scale, int(self.zp), 0, 255)
        return (x,) + tuple(args[1:])


def _container(bits: float):
    import onnx

    if bits <= 4:
        return onnx.TensorProto.INT4, "int4"
    return (onnx.TensorProto.INT8, "int8") if bits <= 8 else (onnx.TensorProto.INT16, "int16")


def _weight_qdq(graph, name: str, fmod: torch.nn.Module, smod: torch.nn.Module, choice, spec: str) -> dict:
    """Replace initializer ``NAME.weight`` by codes -> DequantizeLinear (-> Reshape / Transpose)."""
    import onnx
    from onnx import helper, numpy_helper

    from autocomp.export.checkpoint import stored_codes

    key = f"{name}.weight"
    init = next((i for i in graph.initializer if i.name == key), None)
    if init is None:
        raise AutocompError(f"layer {name!r}: no initializer {key!r} in the exported graph")
    codes, scale, zeros, mask = stored_codes(name, fmod, smod, choice, spec)
    n, k = codes.shape
    if zeros is not None and mask is not None:
        z = zeros[:, None] if zeros.dim() == 1 else zeros.repeat_interleave(int(choice.group), 1)[:, :k]
        codes = torch.where(mask.reshape(n, k), codes, z)
    elif mask is not None:
        codes = codes * mask.reshape(n, k)
    etype, tname = _container(choice.w_bits)
    np_int = np.int16 if tname == "int16" else np.int8
    graph.initializer.remove(init)
    q = helper.make_tensor(f"{key}_quantized", etype, [n, k], codes.to(torch.int64).numpy().astype(np_int).reshape(-1))
    s = numpy_helper.from_array(scale.float().numpy().astype(np.float32), f"{key}_scale")
    inputs = [q.name, s.name]
    new = [q, s]
    if zeros is not None:
        zt = helper.make_tensor(f"{key}_zero_point", etype, list(zeros.shape),
                                zeros.to(torch.int64).numpy().astype(np_int).reshape(-1))
        new.append(zt)
        inputs.append(zt.name)
    attrs = {"axis": 0} if scale.dim() == 1 else {"axis": 1, "block_size": int(choice.group)}
    layout = list(init.dims)
    flat_name = key if layout == [n, k] else f"{key}_rows"
    nodes = [helper.make_node("DequantizeLinear", inputs, [flat_name], name=f"{key}_dq", **attrs)]
    if is_transposed(fmod):                              # Conv1D keeps its weight [K, N]
        nodes.append(helper.make_node("Transpose", [flat_name], [key], name=f"{key}_t", perm=[1, 0]))
    elif layout != [n, k]:                               # a convolution's [O, I, kh, kw]
        shape = numpy_helper.from_array(np.array(layout, dtype=np.int64), f"{key}_shape")
        new.append(shape)
        nodes.append(helper.make_node("Reshape", [flat_name, shape.name], [key], name=f"{key}_reshape"))
    graph.initializer.extend(new)
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    return {"codes": tname, "granularity": "per_channel" if scale.dim() == 1 else f"block {choice.group}",
            "zero_point": zeros is not None, "pruned": mask is not None}


def _example(inputs: Any) -> tuple[tuple, dict, list[str]]:
    if isinstance(inputs, Mapping):
        return (), dict(inputs), list(inputs)
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}, ["input"]
    return tuple(inputs), {}, [f"input_{i}" for i in range(len(inputs))]


def _feeds(inputs: Any, names: list[str]) -> dict[str, np.ndarray]:
    vals = list(inputs.values()) if isinstance(inputs, Mapping) else \
        [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    return {n: v.detach().cpu().numpy() for n, v in zip(names, vals)}


def check_onnx(path: Path, sim: torch.nn.Module, inputs: Any, input_names: list[str]) -> dict[str, Any]:
    """onnxruntime's output of ``path`` against the simulation ``sim`` on ``inputs``."""
    from autocomp.kernels.torchao_backend import output_errors
    from autocomp.workload import output_tensor

    _, ort = require_onnx()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y = session.run(None, _feeds(inputs, input_names))[0]
    except Exception as e:     # noqa: BLE001 - onnxruntime raises its own types; the report says which
        return {"ran": False, "onnxruntime": ort.__version__, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
    with torch.no_grad():
        ref = output_tensor(call_model(sim, inputs))
    err, rel, agree = output_errors(torch.from_numpy(np.asarray(y)), ref)
    return {"ran": True, "onnxruntime": ort.__version__, "max_abs_err": err, "max_rel_err": rel,
            "top1_agreement": agree, "tolerance": TOLERANCE, "ok": rel <= TOLERANCE}


def export_onnx(model: torch.nn.Module, policy: Policy, example_inputs: Any, out_dir: Path,
                act_ranges: Mapping | None = None, compressed: torch.nn.Module | None = None,
                quantizer_spec: str = "rtn") -> dict[str, Any]:
    """Write ``policy`` on ``model`` as ONNX with Q/DQ nodes into ``out_dir`` and check it.

    Args:
        model: the float model.
        example_inputs: one input batch (a tensor, a tuple, or a dict of keyword tensors).
        out_dir: an existing (empty) directory: ``model.onnx`` and ``onnx_report.json``.
        act_ranges: calibrated input ranges (needed when the policy quantizes activations).
        compressed: the simulation (weights from the study's quantizer, input fake-quant hooks);
            default :func:`autocomp.policy.apply` (round to nearest).
        quantizer_spec: its name, for error messages.

    Returns:
        The report written: per layer what was stored, the check against the simulation.
    """
    onnx, _ = require_onnx()
    sim = (compressed if compressed is not None else apply_policy(model, policy, act_ranges)).eval()
    traced = copy.deepcopy(model).eval()
    layers: dict[str, dict] = {}
    tmods = dict(traced.named_modules())
    for name, choice, mod in policy_modules(model, policy):
        entry: dict[str, Any] = {"choice": choice.key}
        rng = None if is_embedding(mod) else input_range(act_ranges, name, choice)
        if rng is not None and choice.per_token:
            entry["activations"] = "float: per-token dynamic inputs are not written as Q/DQ (static scales only)"
        elif rng is not None and choice.a_bits > 8:
            entry["activations"] = f"float: {choice.a_bits}-bit inputs are not written as Q/DQ"
        elif rng is not None:
            tmods[name].register_forward_pre_hook(_ActQDQ(rng[0], rng[1], int(choice.a_bits)))
            entry["activations"] = f"uint8 Q/DQ{' + Clip to %d codes' % 2 ** choice.a_bits if choice.a_bits < 8 else ''}"
        layers[name] = entry
    args, kwargs, names = _example(example_inputs)
    path = Path(out_dir) / MODEL
    with torch.no_grad():
        torch.onnx.export(traced, args, str(path), kwargs=kwargs or None, dynamo=False, opset_version=OPSET,
                          do_constant_folding=False, input_names=names, output_names=["output"])
    proto = onnx.load(str(path))
    smods, fmods = dict(sim.named_modules()), dict(model.named_modules())
    for name, choice, mod in policy_modules(model, policy):
        if not is_float(choice.w_bits):
            layers[name].update(_weight_qdq(proto.graph, name, fmods[name], smods[name], choice, quantizer_spec))
        elif choice.prune > 0:
            init = next(i for i in proto.graph.initializer if i.name == f"{name}.weight")
            init.CopyFrom(onnx.numpy_helper.from_array(smods[name].weight.detach().float().numpy(), init.name))
            layers[name]["pruned"] = "float zeros, stored densely"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    report = {"format": "autocomp.onnx", "opset": OPSET, "onnx": onnx.__version__, "policy_id": policy.id,
              "inputs": names, "layers": layers, "bytes": path.stat().st_size,
              "check": check_onnx(path, sim, example_inputs, names)}
    (Path(out_dir) / REPORT).write_text(json.dumps(report, indent=1))
    return report


def write_onnx(job: ExportJob, path: Path) -> str:
    """The registry's writer: the study's quantizer gives the weights, the workload the example."""
    sim = job.quantizer.apply(job.model, job.policy, job.act_ranges, job.stats) if job.quantizer else None
    rep = export_onnx(job.model, job.policy, job.workload.sample_input(), Path(path), job.act_ranges, sim,
                      getattr(job.quantizer, "spec", "rtn"))
    c = rep["check"]
    checked = (f"onnxruntime {c['onnxruntime']}: max rel err {c['max_rel_err']:.2e} vs the simulation "
               f"(tolerance {c['tolerance']:g})") if c["ran"] else f"onnxruntime could not run it: {c['error']}"
    return f"wrote ONNX (opset {OPSET}, {rep['bytes']} bytes) of policy {job.policy.id}; {checked}"
