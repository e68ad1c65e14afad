"""Validate policies on real kernels: numerics against the simulation and measured latency.

For each policy, :func:`validate_policy` builds the fake-quant simulation
(:func:`autocomp.policy.apply`, or the study's quantizer's model) and the kernel-backed model
(:func:`autocomp.kernels.convert`, or :func:`~autocomp.kernels.from_quantizer.convert_quantized`
with the codes of the quantizer's weights),
feeds every converted layer the input it sees in the simulated model, and compares outputs
(max |y_kernel - y_sim| / max |y_sim|) against the bound of the backend that ran it:

==============  =======  ==========================================================
backend         bound    why it is not 0
==============  =======  ==========================================================
reference       1e-5     same math, float re-association only
cpu_int8        1e-4     exact int32 sums; fp32 rescale and bias
triton_w8a8     1e-3     exact int32 sums; fp32 rescale
triton_wq       1e-2     activations and dequantized weights in fp16 (11-bit mantissa)
==============  =======  ==========================================================

A layer no kernel takes (an embedding, a tied weight, a Conv1d) stays simulated: it is listed
with backend ``simulated`` and a ``note`` saying why, as is a layer on ``reference`` for a reason
(zero points, more than 8 bits); nothing about such a policy raises.

It then times a whole forward pass of the uncompressed float model and of the kernel model on
the same device and batch. :func:`autocomp.stages.validate.validate_study` does this for a study's front (or chosen
policies) and writes the figures back into the study's PTQ evaluations, where
``autocomp front show`` displays them.

Example:
    >>> rep = validate_policy(model, policy, ranges, sample, torch.device("cpu"), 20, metric, batches)  # doctest: +SKIP
    >>> rep.ok, rep.speedup                                                                         # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from autocomp.kernels.from_quantizer import convert_quantized
from autocomp.kernels.modules import _QuantBase, convert, kernel_note
from autocomp.kernels.timing import measure_pair, resolve_device
from autocomp.policy import Policy, apply, policy_modules
from autocomp.modules import batch_size, call_model, tied_aliases
from autocomp.quant import is_float

BOUNDS = {"reference": 1e-5, "cpu_int8": 1e-4, "triton_w8a8": 1e-3, "triton_wq": 1e-2, "simulated": 0.0}
ACT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)  # as the PTQ evaluators calibrate them


@dataclass(frozen=True)
class LayerCheck:
    name: str
    choice: str
    backend: str
    max_rel_err: float
    bound: float
    note: str = ""    # why the layer is on no kernel or on the reference path

    @property
    def ok(self) -> bool:
        return self.max_rel_err <= self.bound


@dataclass
class ValidationReport:
    """What one policy really does on one device."""

    policy_id: str
    device: str
    layers: list[LayerCheck] = field(default_factory=list)
    latency: float = 0.0          # seconds per forward of the kernel model
    fp32_latency: float = 0.0     # seconds per forward of the uncompressed model
    kernel_accuracy: float | None = None
    batch: int = 0

    @property
    def max_rel_err(self) -> float:
        return max((l.max_rel_err for l in self.layers), default=0.0)

    @property
    def ok(self) -> bool:
        return all(l.ok for l in self.layers)

    @property
    def speedup(self) -> float:
        return self.fp32_latency / self.latency if self.latency > 0 else 0.0

    def notes(self) -> list[str]:
        """``layer (choice): why`` for every layer on no kernel or on the reference path for a reason."""
        return [f"{l.name} ({l.choice}): {l.note}" for l in self.layers if l.note]

    def backends(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for l in self.layers:
            out[l.backend] = out.get(l.backend, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(max_rel_err=self.max_rel_err, ok=self.ok, speedup=self.speedup, backends=self.backends())
        return d

    def store_fields(self) -> dict[str, Any]:
        """The keys written into the study's evaluation (``latency`` in seconds)."""
        return {"latency": self.latency, "latency_ms": self.latency * 1e3, "speedup": self.speedup,
                "fp32_latency_ms": self.fp32_latency * 1e3, "kernel_max_rel_err": self.max_rel_err,
                "kernel_ok": self.ok, "kernel_backends": self.backends(), "device": self.device,
                "kernel_accuracy": self.kernel_accuracy, "latency_batch": self.batch}


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def layer_errors(sim: torch.nn.Module, kmodel: torch.nn.Module, sample: Any, device: torch.device) -> list[LayerCheck]:
    """Run ``sample`` through the simulation; give each kernel layer its simulated-model input."""
    kmods = {n: m for n, m in kmodel.named_modules() if isinstance(m, _QuantBase)}
    smods = dict(sim.named_modules())
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name in kmods:
        def pre(mod, args, name=name):
            seen.setdefault(name, (args[0].detach(), None))

        def post(mod, args, out, name=name):
            x, y = seen[name]
            if y is None:
                seen[name] = (x, out.detach())
        # prepend: see the raw input, before the simulation's activation fake-quant hook.
        handles.append(smods[name].register_forward_pre_hook(pre, prepend=True))
        handles.append(smods[name].register_forward_hook(post))
    try:
        with torch.no_grad():
            call_model(sim, sample)
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, km in kmods.items():
        if name not in seen:
            continue
        x, ys = seen[name]
        with torch.no_grad():
            yk = km(x.to(device)).float().cpu()
        err = float((yk - ys).abs().max() / ys.abs().max().clamp_min(1e-12))
        backend = km.backend_for(device)
        note = kernel_note(smods[name], km.choice) if backend == "reference" else ""
        out.append(LayerCheck(name, km.choice.key, backend, err, BOUNDS[backend], note))
    return out


def simulated_layers(model: torch.nn.Module, kmodel: torch.nn.Module, policy: Policy) -> list[LayerCheck]:
    """The policy's compressed layers that ``convert`` left simulated, each with the reason."""
    kmods = {n for n, m in kmodel.named_modules() if isinstance(m, _QuantBase)}
    aliases = tied_aliases(model)
    out = []
    for name, choice, mod in policy_modules(model, policy):
        if name in kmods or (is_float(choice.w_bits) and is_float(choice.a_bits) and choice.prune == 0):
            continue
        note = kernel_note(mod, choice)
        if aliases.get(name):
            note = f"weight tied to {', '.join(aliases[name])}; " + (note or "simulated")
        out.append(LayerCheck(name, choice.key, "simulated", 0.0, BOUNDS["simulated"], note or "simulated"))
    return out


def validate_policy(model: torch.nn.Module, policy: Policy, act_ranges: Mapping, sample: Any,
                    device: str | torch.device = "auto", repeats: int = 20,
                    metric: Callable[[torch.nn.Module, Sequence], float] | None = None,
                    eval_batches: Sequence | None = None, sim: torch.nn.Module | None = None,
                    results: Mapping[str, Any] | None = None) -> ValidationReport:
    """Check ``policy`` on kernels: per-layer error vs the simulation, latency vs float, accuracy.

    Args:
        model: the float model.
        policy: the policy to check.
        act_ranges: calibrated activation ranges (:func:`autocomp.calibrate.activation_ranges`).
        sample: one input batch (numerics and latency are measured on it).
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        repeats: timed forwards per model (median reported).
        metric, eval_batches: when given, the kernel model's metric on them is reported.
        sim: the quantizer's compressed model (:meth:`autocomp.quantizers.Quantizer.apply`), whose
            weights and biases the kernels then run (:func:`~autocomp.kernels.from_quantizer.convert_quantized`);
            None: rtn's simulation (:func:`autocomp.policy.apply`) and :func:`convert`.
        results: with ``sim``, the quantizer's per-layer results (``apply(..., results=...)``).
    """
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if sim is None:
        sim = apply(model, policy, act_ranges).eval()
        kmodel = convert(model, policy, act_ranges).to(dev).eval()
    else:
        sim = sim.eval()
        kmodel = convert_quantized(model, sim, policy, act_ranges, results).to(dev).eval()
    rep = ValidationReport(policy.id, str(dev))
    rep.layers = layer_errors(sim, kmodel, sample, dev) + simulated_layers(model, kmodel, policy)
    fp = model.to(dev).eval()
    x = _to(sample, dev)
    rep.batch = batch_size(sample)
    rep.fp32_latency, rep.latency = measure_pair(lambda: call_model(fp, x), lambda: call_model(kmodel, x), dev, repeats)
    model.to("cpu")
    if metric is not None and eval_batches is not None:
        with torch.no_grad():
            rep.kernel_accuracy = float(metric(kmodel, _to(list(eval_batches), dev)))
    return rep
