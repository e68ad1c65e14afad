"""Zero-cost proxies that need at most one backward pass per calibration chunk."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from autocomp.calibrate import activation_stats
from autocomp.modules import call_model, capture_inputs, output_first, weight_of
from autocomp.proxies._base import Proxy
from autocomp.proxies._options import ChunkOptions
from autocomp.proxies._perturb import act_key, check_spec, is_default, perturbation_norms, token_stats
from autocomp.quant import compress_weight, fake_quant_act, is_float
from autocomp.sensitivity import Sensitivity


def choice_perturbations(module: torch.nn.Module, choices) -> dict[str, torch.Tensor]:
    """Per choice key: the weight perturbation C(W) - W (with output channels first; group-wise
    and asymmetric choices quantized as the policy would)."""
    w = weight_of(module).detach().float()
    return {c.key: compress_weight(w, c.w_bits, c.prune, c.group, c.zero_point) - w for c in choices}


def needs_act_quant(choices: dict) -> bool:
    """True when some layer may take a quantized input activation."""
    return any(not is_float(c.a_bits) for cs in choices.values() for c in cs)


def act_stats_if_needed(model: torch.nn.Module, layers, calib, choices: dict) -> dict:
    """Calibration activation statistics, gathered only when activations can be quantized."""
    if not needs_act_quant(choices):
        return {}
    return {**activation_stats(model, [l.name for l in layers], calib), **token_stats(model, layers, calib, choices)}


def omega_table(layers, space, model: torch.nn.Module, calib, per_choice: Callable[..., float],
                acts: bool = True) -> dict[str, dict[str, float]]:
    """``omega[layer][choice key]`` from ``per_choice(name, choice, dW, act)`` for every allowed choice.

    ``dW`` is the choice's weight perturbation C(W) - W; ``act`` is the layer input's calibration
    statistics ``(lo, hi, sample)`` when the choice quantizes activations (and ``acts``), else None.
    """
    mods = dict(model.named_modules())
    choices = space.choices(layers)
    stats = act_stats_if_needed(model, layers, calib, choices) if acts else {}
    out = {}
    for l in layers:
        n = l.name
        deltas = choice_perturbations(mods[n], choices[n])
        out[n] = {c.key: float(per_choice(n, c, deltas[c.key], None if is_float(c.a_bits) else stats.get(act_key(n, c))))
                  for c in choices[n]}
    return out


def act_mse(sample: torch.Tensor, lo: float, hi: float, bits: int) -> float:
    """Mean squared activation quantization error on a calibration sample."""
    if is_float(bits) or sample.numel() == 0:
        return 0.0
    from autocomp.quant import choose_act_range

    clo, chi = choose_act_range(sample, lo, hi, bits)
    return float(((fake_quant_act(sample, clo, chi, bits) - sample) ** 2).mean())


def fisher_diagonals(workload, names: Sequence[str], chunk: int = 16):
    """Empirical Fisher diagonals of each layer's weight and mean squared input gradients.

    Gradients are taken per chunk of ``chunk`` samples of the calibration batches, so the
    estimate averages many gradient outer products, not one.
    """
    model = workload.model()
    mods = dict(model.named_modules())
    fw = {n: torch.zeros_like(weight_of(mods[n]), dtype=torch.float32) for n in names}
    fx = {n: 0.0 for n in names}
    params = {n: mods[n].weight for n in names}
    req = {n: p.requires_grad for n, p in params.items()}
    count = 0
    try:
        for p in params.values():
            p.requires_grad_(True)
        with capture_inputs(model, names, detach=False) as seen:
            for x, y in workload.calib:
                for xs, ys in _chunks(x, y, chunk):
                    model.zero_grad(set_to_none=True)
                    for calls in seen.values():
                        calls.clear()
                    xs = _requires_grad(xs)
                    loss = workload.loss(call_model(model, xs), ys)
                    inputs = {}   # a layer's input on the autograd path (a shared layer: its last call's)
                    for n, calls in seen.items():
                        on_path = [t for t in calls if t.requires_grad]
                        if on_path:
                            inputs[n] = on_path[-1]
                            inputs[n].retain_grad()
                    loss.backward()
                    for n in names:
                        g = params[n].grad
                        if g is not None:
                            fw[n] += output_first(mods[n], g).detach().float() ** 2
                        xi = inputs.get(n)
                        if xi is not None and xi.grad is not None:
                            fx[n] += float((xi.grad.detach().float() ** 2).sum())
                    count += 1
    finally:
        for n, p in params.items():
            p.requires_grad_(req[n])
        model.zero_grad(set_to_none=True)   # biases and norms got gradients too: the model is shared
    count = max(count, 1)
    return {n: v / count for n, v in fw.items()}, {n: v / count for n, v in fx.items()}


def _requires_grad(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().clone().requires_grad_(True)
    return x


def _chunks(x, y, size):
    n = int(y.shape[0])
    for i in range(0, n, size):
        sl = slice(i, i + size)
        if isinstance(x, torch.Tensor):
            xs = x[sl]
        elif isinstance(x, dict):
            xs = {k: v[sl] for k, v in x.items()}
        else:
            xs = tuple(v[sl] for v in x)
        yield xs, y[sl]


class FisherProxy(Proxy):
    """Diagonal-Fisher weighted compression error (an OBD-style second-order estimate).

    omega(l, c) = sum_i F_ii (C(W)_i - W_i)^2  +  E[(dL/dx)^2] * numel(x) * MSE_act(c.a_bits)

    Options: ``chunk`` (samples per gradient, default 16).
    """

    name = "fisher"

    @dataclass(frozen=True)
    class Options(ChunkOptions):
        chunk: int = 16

    def score(self, workload, layers, space) -> Sensitivity:
        names = [l.name for l in layers]
        fw, fx = fisher_diagonals(workload, names, chunk=self.config.chunk)
        model = workload.model()

        def term(n, c, dw, act) -> float:
            a_term = fx[n] * act_mse(act[2], act[0], act[1], int(c.a_bits)) if act is not None else 0.0
            return float((fw[n] * dw ** 2).sum()) + a_term

        omega = omega_table(layers, space, model, workload.calib, term)
        scores = {n: float(fw[n].mean()) for n in names}
        return Sensitivity(self.name, omega, scores)


class QuantMSEProxy(Proxy):
    """Plain weight compression error ||C(W) - W||^2 (no layer weighting): a baseline.

    Options: ``quantizer`` (whose weights give ``C(W)``, default ``rtn``; under one that uses
    calibration statistics, the input-weighted error of :mod:`autocomp.proxies._perturb`).
    """

    name = "quant_mse"

    @dataclass(frozen=True)
    class Options:
        quantizer: str = "rtn"

        def __post_init__(self) -> None:
            check_spec(self.quantizer)

    def score(self, workload, layers, space) -> Sensitivity:
        if not is_default(self.config.quantizer, space):
            omega = perturbation_norms(self.config.quantizer, workload.model(), layers, space.choices(layers),
                                       workload.calib)
            return Sensitivity(self.name, omega, {l.name: 1.0 for l in layers})
        omega = omega_table(layers, space, workload.model(), workload.calib,
                            lambda n, c, dw, act: float((dw ** 2).sum()), acts=False)
        return Sensitivity(self.name, omega, {l.name: 1.0 for l in layers})
