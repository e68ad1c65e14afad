"""torchao as a second kernel backend: a policy mapped onto torchao's configs, run on its kernels.

:func:`torchao_plan` maps each layer's choice to the nearest torchao (0.18) config, or says why
none expresses it; nothing is silently changed. The mapping (weights symmetric unless the choice
has a zero point):

=========================  ==================================  ===============================
choice                     torchao config                      layer types
=========================  ==================================  ===============================
w8 a32 (per channel/group) ``Int8WeightOnlyConfig``            ``nn.Linear``
w2..7 a32, w8 a32 z        ``IntxWeightOnlyConfig(int{b})``    ``nn.Linear``, ``nn.Embedding``
w8 a8 (per channel)        ``Int8DynamicActivationInt8Weight`` ``nn.Linear``
w2..8 a8 (other)           ``Int8DynamicActivationIntxWeight`` ``nn.Linear``
w32 a32                    float (no config)                   any
=========================  ==================================  ===============================

Not expressible (listed in :attr:`TorchaoPlan.unsupported`, the layer kept float): pruning,
binary and ternary weights, more than 8 weight bits, activation bits other than 8 (or 32),
activation-only quantization, groups that do not divide the row, convolutions and transformers'
``Conv1D``, weights tied to another layer. ``Int4WeightOnlyConfig`` is not used: on this torchao
it needs CUDA (tinygemm / mslk); ``IntxWeightOnlyConfig(int4)`` runs everywhere.

autocomp's activations are static per tensor (calibrated); torchao's a8 configs quantize them
dynamically per token: the nearest torchao has, recorded in each layer's ``note``.

:func:`torchao_model` quantizes a model whose weights already lie on the policy's grid (the
simulation's), so torchao's own choice of scales lands back on autocomp's codes wherever a weight
sits at an end code (``SYMMETRIC_NO_CLIPPING_ERR``; exact for asymmetric). :func:`compare_backends`
runs the simulation, autocomp's kernels and torchao's on one device, in one run.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice, Policy
    >>> m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Conv1d(4, 4, 1))
    >>> plan = torchao_plan(m, Policy.from_choices({"0": Choice(4, 32, group=32), "1": Choice(8, 32)}))
    >>> plan.layers[0].config, plan.layers[0].kwargs["granularity"]
    ('IntxWeightOnlyConfig', {'PerGroup': {'group_size': 32}})
    >>> plan.unsupported[0].reason
    "Conv1d: torchao's integer configs take nn.Linear (and nn.Embedding, weight-only)"
"""
from __future__ import annotations

import collections
import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import torch

from autocomp.errors import AutocompError
from autocomp.modules import is_embedding, tied_aliases, weight_of
from autocomp.policy import Choice, Policy, policy_modules
from autocomp.quant import TERNARY_BITS, is_float

MISSING = "torchao is not installed: pip install 'autocomp[torchao]'"
DYNAMIC_NOTE = "activations: torchao int8 dynamic per token (autocomp: static per tensor, calibrated)"


def require_torchao():
    """``torchao.quantization``, or one error line naming the extra to install."""
    try:
        import torchao.quantization as tq
    except ImportError:
        raise AutocompError(MISSING) from None
    return tq


@dataclass(frozen=True)
class TorchaoLayer:
    """One layer's torchao config: ``config`` a class of ``torchao.quantization`` (None: float)
    and ``kwargs`` in plain JSON (dtypes and enums by name, a granularity as ``{class: kwargs}``)."""

    name: str
    choice: str
    config: str | None
    kwargs: dict = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Unsupported:
    """A layer whose choice torchao cannot express, with why; it stays float in torchao's model."""

    name: str
    choice: str
    reason: str


@dataclass
class TorchaoPlan:
    """A policy mapped onto torchao: a config per expressible layer, and the layers it cannot take."""

    policy_id: str
    layers: list[TorchaoLayer] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)

    @property
    def quantized(self) -> list[TorchaoLayer]:
        return [l for l in self.layers if l.config is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"policy_id": self.policy_id, "layers": [asdict(l) for l in self.layers],
                "unsupported": [asdict(u) for u in self.unsupported]}

    def configs(self):
        """torchao's ``FqnToConfig`` for the quantized layers (module fqn -> config)."""
        tq = require_torchao()
        return tq.FqnToConfig(collections.OrderedDict((l.name, build_config(l.config, l.kwargs))
                                                      for l in self.quantized))


def _granularity(choice: Choice, k: int) -> dict:
    if choice.group is None or choice.group >= k:
        return {"PerAxis": {"axis": 0}}
    return {"PerGroup": {"group_size": int(choice.group)}}


def _why_not(name: str, mod: torch.nn.Module, choice: Choice, tied: list[str]) -> str:
    """Why torchao cannot express ``choice`` on ``mod`` ('' when it can)."""
    if not (type(mod) is torch.nn.Linear or is_embedding(mod)):
        return f"{type(mod).__name__}: torchao's integer configs take nn.Linear (and nn.Embedding, weight-only)"
    if tied:
        return f"weight tied to {', '.join(tied)}: torchao would quantize the shared tensor once per module"
    if choice.prune > 0:
        return "pruning: torchao's sparsity is 2:4 / block, not unstructured magnitude pruning"
    if is_float(choice.w_bits):
        return "activation-only quantization: torchao's int8 activation configs quantize the weights too"
    if choice.w_bits == 1:
        return "binary weights (sign x mean|w|): torchao's int1 grid is {-1, 0}"
    if abs(choice.w_bits - TERNARY_BITS) < 1e-6:
        return "ternary weights: no torchao config"
    if choice.w_bits > 8 or choice.w_bits != int(choice.w_bits):
        return f"{choice.w_bits:g}-bit weights: torchao's integer configs take 1..8 bits"
    k = weight_of(mod).reshape(weight_of(mod).shape[0], -1).shape[1]
    if choice.group is not None and choice.group < k and k % choice.group:
        return f"group {choice.group} does not divide the row ({k}): torchao's groups must"
    if not is_embedding(mod) and not is_float(choice.a_bits) and choice.a_bits != 8:
        return f"{choice.a_bits}-bit activations: torchao quantizes activations to int8 only"
    return ""


def layer_config(mod: torch.nn.Module, choice: Choice) -> tuple[str, dict, str]:
    """``(config class, plain kwargs, note)`` for an expressible choice (see :func:`_why_not`)."""
    bits = int(choice.w_bits)
    k = weight_of(mod).reshape(weight_of(mod).shape[0], -1).shape[1]
    gran = _granularity(choice, k)
    # SYMMETRIC divides the range by 2**(b-1) - 0.5; NO_CLIPPING_ERR picks max(min/qmin, max/qmax),
    # which is autocomp's scale whenever a weight sits at an end code.
    mapping = "ASYMMETRIC" if choice.zero_point else "SYMMETRIC_NO_CLIPPING_ERR"
    dynamic = not is_embedding(mod) and choice.a_bits == 8
    dyn_note = "activations: torchao int8 dynamic per token, as the choice's" if choice.per_token else DYNAMIC_NOTE
    if not dynamic:
        if bits == 8 and not choice.zero_point:
            g = {"PerRow": {}} if "PerAxis" in gran else gran
            return "Int8WeightOnlyConfig", {"granularity": g}, "weights: torchao's symmetric scales (amax / 127.5)"
        return "IntxWeightOnlyConfig", {"weight_dtype": f"int{bits}", "granularity": gran, "mapping_type": mapping}, ""
    if bits == 8 and not choice.zero_point and "PerAxis" in gran:
        return ("Int8DynamicActivationInt8WeightConfig", {"act_mapping_type": "ASYMMETRIC"},
                dyn_note + "; weights: torchao's symmetric scales (amax / 127.5)")
    return ("Int8DynamicActivationIntxWeightConfig",
            {"weight_dtype": f"int{bits}", "weight_granularity": gran, "weight_mapping_type": mapping}, dyn_note)


def torchao_plan(model: torch.nn.Module, policy: Policy) -> TorchaoPlan:
    """Each of ``policy``'s layers mapped onto the nearest torchao config, or listed with why not.

    Needs no torchao (the plan is plain data); :meth:`TorchaoPlan.configs` builds torchao's objects.
    """
    aliases = tied_aliases(model)
    plan = TorchaoPlan(policy.id)
    for name, choice, mod in policy_modules(model, policy):
        if is_float(choice.w_bits) and is_float(choice.a_bits) and choice.prune == 0:
            plan.layers.append(TorchaoLayer(name, choice.key, None, {}, "float"))
            continue
        if is_embedding(mod) and is_float(choice.w_bits) and choice.prune == 0:
            plan.layers.append(TorchaoLayer(name, choice.key, None, {}, "float (an embedding's input is ids)"))
            continue
        why = _why_not(name, mod, choice, aliases.get(name, []))
        if why:
            plan.unsupported.append(Unsupported(name, choice.key, why))
            plan.layers.append(TorchaoLayer(name, choice.key, None, {}, "kept float: " + why))
            continue
        cls, kwargs, note = layer_config(mod, choice)
        plan.layers.append(TorchaoLayer(name, choice.key, cls, kwargs, note))
    return plan


def build_config(cls: str, kwargs: Mapping[str, Any]):
    """torchao's config object from a class name and the plain kwargs :func:`torchao_plan` writes.

    Example:
        >>> build_config("IntxWeightOnlyConfig", {"weight_dtype": "int4", "granularity": {"PerGroup": {"group_size": 32}},
        ...                                        "mapping_type": "ASYMMETRIC"}).granularity        # doctest: +SKIP
        PerGroup(group_size=32)
    """
    tq = require_torchao()
    from torchao.quantization import granularity as gr
    from torchao.quantization.quant_primitives import MappingType

    def value(key: str, v: Any) -> Any:
        if key.endswith("granularity"):
            (gcls, gkw), = v.items()
            return getattr(gr, gcls)(**gkw)
        if key.endswith("dtype"):
            return getattr(torch, v)
        if key.endswith("mapping_type"):
            return MappingType[v]
        return v

    return getattr(tq, cls)(**{k: value(k, v) for k, v in kwargs.items()})


def weight_only(policy: Policy) -> Policy:
    """``policy`` with every input left float: the weights a torchao model starts from (torchao
    quantizes activations itself)."""
    return Policy.from_choices([(n, replace(c, a_bits=32)) for n, c in policy.layers])


def torchao_model(compressed: torch.nn.Module, plan: TorchaoPlan, float_model: torch.nn.Module | None = None,
                  device: torch.device | str = "cpu") -> torch.nn.Module:
    """A copy of ``compressed`` (weights on the policy's grid, inputs float) quantized by
    ``torchao.quantization.quantize_`` following ``plan``.

    Args:
        compressed: e.g. ``apply(model, weight_only(policy))``; never modified.
        float_model: when given, the layers torchao cannot express get its float weights back, so
            that they are float as :attr:`TorchaoPlan.unsupported` says.
        device: where the quantized model is built (torchao's kernels are device-specific).
    """
    tq = require_torchao()
    out = copy.deepcopy(compressed).to(device).eval()
    if float_model is not None and plan.unsupported:
        src = dict(float_model.named_modules())
        mods = dict(out.named_modules())
        with torch.no_grad():
            for u in plan.unsupported:
                for pname, p in mods[u.name].named_parameters(recurse=False):
                    p.copy_(getattr(src[u.name], pname))
    if not plan.quantized and plan.unsupported:
        raise AutocompError(f"torchao cannot express any layer of policy {plan.policy_id}: "
                            + "; ".join(f"{u.name}: {u.reason}" for u in plan.unsupported[:3]))
    if plan.quantized:
        tq.quantize_(out, plan.configs(), filter_fn=None)
    return out


@dataclass(frozen=True)
class BackendRun:
    """One backend's whole-model forward against the simulation, on one sample.

    Attributes:
        backend: ``fp32`` (the float model), ``autocomp`` (its kernels) or ``torchao``.
        latency: median seconds per forward.
        max_abs_err: max |y - y_sim| over the output (logits).
        max_rel_err: ``max_abs_err / max |y_sim|``.
        top1_agreement: fraction of positions whose argmax equals the simulation's.
    """

    backend: str
    latency: float
    max_abs_err: float
    max_rel_err: float
    top1_agreement: float


@dataclass
class BackendComparison:
    """A policy on autocomp's kernels and on torchao's, beside the float model, one device, one run."""

    policy_id: str
    device: str
    runs: list[BackendRun] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)
    batch: int = 0
    note: str = ""      # why there is no torchao run (it can express no layer of the policy)

    def run(self, backend: str) -> BackendRun | None:
        return next((r for r in self.runs if r.backend == backend), None)

    def store_fields(self) -> dict[str, Any]:
        """The ``torchao_*`` keys written into the study's evaluation (latency in milliseconds)."""
        out: dict[str, Any] = {"torchao_unsupported_layers": len(self.unsupported), "torchao_version": _version()}
        t = self.run("torchao")
        if t is not None:
            out.update(torchao_latency_ms=t.latency * 1e3, torchao_max_rel_err=t.max_rel_err,
                       torchao_max_abs_err=t.max_abs_err, torchao_top1_agreement=t.top1_agreement)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"policy_id": self.policy_id, "device": self.device, "batch": self.batch,
                "runs": [asdict(r) for r in self.runs], "unsupported": [asdict(u) for u in self.unsupported]}


def _version() -> str:
    import torchao

    return torchao.__version__


def _timed(fns: Mapping[str, Any], device: torch.device, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each fn, called in turn each round so that load on a shared
    machine drifts onto all of them alike."""
    import statistics
    import time

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        sync()
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def output_errors(y: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """``(max abs, max abs / max |ref|, top-1 agreement)`` of output ``y`` against ``ref``.

    Example:
        >>> output_errors(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([[1.0, 2.5], [2.0, 1.0]]))
        (1.0, 0.4, 1.0)
    """
    y, ref = y.detach().float().cpu(), ref.detach().float().cpu()
    err = float((y - ref).abs().max())
    agree = float((y.argmax(-1) == ref.argmax(-1)).float().mean())
    return err, err / max(float(ref.abs().max()), 1e-12), agree


def _inputs_float(sim: torch.nn.Module) -> torch.nn.Module:
    """A copy of a compressed model with its weights and biases as they are and its inputs float
    (the activation fake-quant hooks of :class:`autocomp.policy.ActFakeQuant` dropped)."""
    from autocomp.policy import ActFakeQuant

    out = copy.deepcopy(sim)
    for m in out.modules():
        for k in [k for k, h in m._forward_pre_hooks.items() if isinstance(h, ActFakeQuant)]:
            del m._forward_pre_hooks[k]
    return out


def compare_backends(model: torch.nn.Module, policy: Policy, act_ranges: Mapping, sample: Any,
                     device: torch.device | str = "cpu", repeats: int = 20, sim: torch.nn.Module | None = None,
                     results: Mapping[str, Any] | None = None) -> BackendComparison:
    """Run ``policy`` on autocomp's kernels and on torchao's beside the float model; compare each
    output with the simulation's (:func:`autocomp.policy.apply`) and time all three alternately.

    With ``sim`` (another quantizer's compressed model, :meth:`autocomp.quantizers.Quantizer.apply`,
    and its per-layer ``results``), the reference is ``sim``, autocomp's kernels run its codes
    (:func:`~autocomp.kernels.from_quantizer.convert_quantized`) and torchao starts from its
    weights and biases (inputs float), not from rtn's: both backends run what was evaluated. A
    policy with AWQ input scales is not given to torchao (no torchao form for them; ``note`` says so).

    Example:
        >>> cmp = compare_backends(model, policy, ranges, sample, "cpu", 20)             # doctest: +SKIP
        >>> cmp.run("torchao").top1_agreement, cmp.run("autocomp").latency               # doctest: +SKIP
    """
    from autocomp.kernels.modules import convert
    from autocomp.modules import batch_size, call_model
    from autocomp.policy import apply
    from autocomp.workload import output_tensor

    dev = torch.device(device)
    plan = torchao_plan(model, policy)
    if sim is None:
        sim = apply(model, policy, act_ranges).eval()
        kernels, start = convert(model, policy, act_ranges), apply(model, weight_only(policy))
    else:
        from autocomp.kernels.from_quantizer import convert_quantized

        sim = sim.eval()
        kernels, start = convert_quantized(model, sim, policy, act_ranges, results), _inputs_float(sim)
        if any(getattr(r, "input_scale", None) is not None for r in (results or {}).values()):
            start = None
    models = {"fp32": copy.deepcopy(model).to(dev).eval(), "autocomp": kernels.to(dev).eval()}
    note = ""
    if start is None:
        note = "torchao has no form for AWQ's input scales: not run"
    elif plan.quantized or not plan.unsupported:
        models["torchao"] = torchao_model(start, plan, model, dev)
    else:
        note = "torchao cannot express any layer of this policy"
    x = _to(sample, dev)
    with torch.no_grad():
        ref = output_tensor(call_model(sim, sample))
        outs = {k: output_tensor(call_model(m, x)) for k, m in models.items()}
    lat = _timed({k: (lambda m=m: call_model(m, x)) for k, m in models.items()}, dev, repeats)
    cmp = BackendComparison(policy.id, str(dev), unsupported=list(plan.unsupported), batch=batch_size(sample), note=note)
    for k in models:
        cmp.runs.append(BackendRun(k, lat[k], *output_errors(outs[k], ref)))
    return cmp
