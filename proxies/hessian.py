"""Hessian proxies: ``hessian_trace`` (HAWQ-V2, Hutchinson) and ``hessian_eig`` (HAWQ, power iteration).

One Hessian-vector product (reverse over reverse) with a Rademacher probe ``v`` spanning every
layer gives every layer's trace estimate at once: ``E[v_l . (H v)_l] = Tr(H_ll)`` because the
cross blocks average out. So per-layer traces cost what PyHessian pays for the total trace, and
only the quantizable weights (plus, when the space quantizes activations, the layers' inputs) are
differentiated, not every BatchNorm scale and bias.

Probes are numbered; probe ``i`` on batch ``b`` draws from a generator seeded by ``(seed, b, i)``,
so any split of probes or batches over Ray tasks reproduces the serial result exactly.

Sensitivity (HAWQ-V2): omega(l, c) = Tr(H_W)/n_W * ||C(W) - W||^2 + Tr(H_x) * MSE_act(c.a_bits),
where the activation term is the same estimate for the layer's input (its trace is taken for the
mean loss of the batch, so the per-element squared error needs no further scaling).

Example:
    >>> from autocomp.proxies import get_proxy
    >>> sens = get_proxy("hessian_trace", max_probes=32).score(wl, layers, space)  # doctest: +SKIP
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from autocomp.errors import AutocompError
from autocomp.policy import weight_of
from autocomp.profile import _call
from autocomp.proxies._base import Proxy, Sensitivity
from autocomp.proxies.zero_cost import act_mse, act_stats_if_needed, choice_perturbations, needs_act_quant
from autocomp.quant import is_float

ACT = "act:"  # prefix of the block holding a layer's input activation


def probe(like: torch.Tensor, seed: int, batch: int, index: int) -> torch.Tensor:
    """Rademacher vector (entries +-1) for probe ``index`` of ``batch``; the same everywhere."""
    g = torch.Generator().manual_seed(_mix(seed, batch, index))
    return (torch.randint(0, 2, like.shape, generator=g, dtype=torch.int8).to(like.dtype) * 2 - 1)


def _mix(*xs: int) -> int:
    """A seed from integers, identical in every process (``hash`` of str is salted per process)."""
    h = 1469598103934665603
    for x in xs:
        h = ((h ^ (int(x) & 0xFFFF_FFFF)) * 1099511628211) & 0x7FFF_FFFF_FFFF_FFFF
    return h


@dataclass
class _Graph:
    """The first-order gradient graph of one batch, kept for repeated Hessian-vector products."""

    keys: list[str]          # block names: layer names, then "act:<layer>" blocks
    variables: list[torch.Tensor]
    grads: tuple[torch.Tensor, ...]

    def hvp(self, vs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(self.grads, self.variables, grad_outputs=list(vs), retain_graph=True)


class _Grad:
    """Context: weights of ``names`` require grad (others not), layer inputs captured if asked."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str], activations: bool):
        self.model, self.names, self.activations = model, list(names), activations
        self.mods = dict(model.named_modules())
        self.inputs: dict[str, torch.Tensor] = {}

    def __enter__(self) -> "_Grad":
        self.saved = {p: p.requires_grad for p in self.model.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        for n in self.names:
            self.mods[n].weight.requires_grad_(True)
        self.handles = []
        if self.activations:
            for n in self.names:
                self.handles.append(self.mods[n].register_forward_pre_hook(self._hook(n)))
        return self

    def _hook(self, n: str) -> Callable:
        def hook(mod, args):
            x = args[0]
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return None
            if not x.requires_grad:  # the model's input: make it a leaf we can differentiate
                x = x.detach().requires_grad_(True)
            if n not in self.inputs:  # first call only (weight-shared layers keep their first input)
                self.inputs[n] = x
            return (x,) + tuple(args[1:])
        return hook

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        for p, r in self.saved.items():
            p.requires_grad_(r)
            p.grad = None

    def graph(self, batch, loss_fn) -> _Graph:
        self.inputs.clear()
        x, y = batch
        loss = loss_fn(_call(self.model, x), y)
        keys = list(self.names)
        variables = [self.mods[n].weight for n in self.names]
        if self.activations:
            for n in self.names:
                if n in self.inputs:
                    keys.append(ACT + n)
                    variables.append(self.inputs[n])
        grads = torch.autograd.grad(loss, variables, create_graph=True, allow_unused=True)
        # Blocks the loss does not reach have a zero Hessian: drop them.
        keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return _Graph([keys[i] for i in keep], [variables[i] for i in keep], tuple(grads[i] for i in keep))


def probe_values(model: torch.nn.Module, loss_fn, batch, names: Sequence[str], probe_ids: Sequence[int],
                 seed: int = 0, batch_index: int = 0, activations: bool = False) -> list[dict[str, float]]:
    """``v_l . (H v)_l`` per block for each probe id on one batch (one HVP per probe).

    Example:
        >>> vals = probe_values(model, wl.loss, wl.calib[0], ["fc"], range(8))  # doctest: +SKIP
    """
    with _Grad(model, names, activations) as ctx:
        g = ctx.graph(batch, loss_fn)
        out = []
        for i in probe_ids:
            vs = [probe(v, seed, batch_index, i) for v in g.variables]
            hv = g.hvp(vs)
            out.append({k: float((v * h).sum()) for k, v, h in zip(g.keys, vs, hv)})
    return out


def stop_index(totals: Sequence[float], tol: float, min_probes: int = 2) -> int | None:
    """Probes to keep: the first k >= min_probes whose running mean moved by < tol (relative).

    The change is taken in absolute value: a negative running difference must not stop the loop
    (NNCF #2155, where a signed comparison ended Hutchinson after a probe or two).
    """
    mean = 0.0
    for k, t in enumerate(totals, start=1):
        new = mean + (t - mean) / k
        if k >= max(min_probes, 2) and abs(new - mean) / (abs(mean) + 1e-12) < tol:
            return k
        mean = new
    return None


def batch_traces(model, loss_fn, batch, names, seed: int = 0, batch_index: int = 0, tol: float = 1e-3,
                 max_probes: int = 64, min_probes: int = 4, activations: bool = False,
                 first_probe: int = 0) -> tuple[dict[str, float], int]:
    """Per-block Hutchinson traces of one batch; returns (traces, probes used)."""
    with _Grad(model, names, activations) as ctx:
        g = ctx.graph(batch, loss_fn)
        vals: list[dict[str, float]] = []
        for i in range(first_probe, first_probe + max_probes):
            vs = [probe(v, seed, batch_index, i) for v in g.variables]
            hv = g.hvp(vs)
            vals.append({k: float((v * h).sum()) for k, v, h in zip(g.keys, vs, hv)})
            if stop_index([sum(d.values()) for d in vals], tol, min_probes) == len(vals):
                break
    return reduce_probes(vals, len(vals)), len(vals)


def reduce_probes(vals: Sequence[dict[str, float]], k: int) -> dict[str, float]:
    keys = vals[0].keys() if vals else ()
    return {key: sum(d[key] for d in vals[:k]) / max(k, 1) for key in keys}


def hutchinson_traces(model, loss_fn, batches, names, seed: int = 0, tol: float = 1e-3, max_probes: int = 64,
                      min_probes: int = 4, activations: bool = False) -> dict[str, float]:
    """Per-layer Hessian traces averaged over calibration batches (weighted by batch size).

    Example:
        >>> tr = hutchinson_traces(wl.model(), wl.loss, wl.calib, ["features.0"])  # doctest: +SKIP
    """
    parts = []
    for b, batch in enumerate(batches):
        tr, _ = batch_traces(model, loss_fn, batch, names, seed, b, tol, max_probes, min_probes, activations)
        parts.append((tr, int(batch[1].shape[0])))
    return combine_batches(parts)


def combine_batches(parts: Sequence[tuple[dict[str, float], int]]) -> dict[str, float]:
    total = sum(w for _, w in parts) or 1
    keys = {k for d, _ in parts for k in d}
    return {k: sum(d.get(k, 0.0) * w for d, w in parts) / total for k in keys}


def top_eigenvalues(model, loss_fn, batches, names, seed: int = 0, tol: float = 1e-3,
                    max_iter: int = 50) -> dict[str, float]:
    """Per-layer top eigenvalue of the diagonal Hessian block, by power iteration (HAWQ).

    The block Hessian of the mean calibration loss is applied as the batch-size-weighted mean of
    per-batch products, with the other layers' directions set to zero.
    """
    mods = dict(model.named_modules())
    out: dict[str, float] = {}
    with _Grad(model, names, False) as ctx:
        graphs = [(ctx.graph(b, loss_fn), int(b[1].shape[0])) for b in batches]
        total = sum(w for _, w in graphs)
        for n in names:
            w = mods[n].weight
            g = torch.Generator().manual_seed(_mix(seed, 1 << 20, zlib.crc32(n.encode())))
            v = torch.randn(w.shape, generator=g, dtype=w.dtype)
            v = v / v.norm()
            eig = 0.0
            for it in range(max_iter):
                hv = torch.zeros_like(w)
                for gr, bw in graphs:
                    if n not in gr.keys:
                        continue
                    vs = [v if k == n else torch.zeros_like(x) for k, x in zip(gr.keys, gr.variables)]
                    hv += gr.hvp(vs)[gr.keys.index(n)].detach() * (bw / total)
                new = float((hv * v).sum())
                norm = float(hv.norm())
                if norm == 0.0:
                    eig = 0.0
                    break
                v = hv / norm
                if it > 0 and abs(new - eig) / (abs(eig) + 1e-12) < tol:
                    eig = new
                    break
                eig = new
            out[n] = eig
    return out


def hawq_omega(layers, space, model, calib, traces: dict[str, float], proxy: str,
               layer_scores: dict[str, float]) -> Sensitivity:
    """Omega = Tr(H_W)/n * ||C(W) - W||^2 (+ Tr(H_x) * MSE_act when activations are quantized)."""
    mods = dict(model.named_modules())
    choices = space.choices(layers)
    stats = act_stats_if_needed(model, layers, calib, choices)
    omega = {}
    for l in layers:
        n = l.name
        deltas = choice_perturbations(mods[n], choices[n])
        per_w = traces.get(n, 0.0) / max(weight_of(mods[n]).numel(), 1)
        row = {}
        for c in choices[n]:
            v = per_w * float((deltas[c.key] ** 2).sum())
            if not is_float(c.a_bits) and ACT + n in traces:
                lo, hi, sample = stats[n]
                v += max(traces[ACT + n], 0.0) * act_mse(sample, lo, hi, int(c.a_bits))
            row[c.key] = max(v, 0.0)
        omega[n] = row
    return Sensitivity(proxy, omega, layer_scores)


def _needs_act(layers, space) -> bool:
    return needs_act_quant(space.choices(layers))


class HessianTraceProxy(Proxy):
    """HAWQ-V2: average Hessian trace per layer (Hutchinson), times the choice's perturbation.

    Options: ``tol`` (relative, default 1e-2), ``max_probes`` (per batch, default 32),
    ``min_probes`` (default 8), ``seed``; ``traces`` (precomputed, e.g. from Ray tasks).
    """

    name = "hessian_trace"

    def score(self, workload, layers, space) -> Sensitivity:
        o = self.options
        model = workload.model()
        names = [l.name for l in layers]
        traces = o.get("traces")
        if traces is None:
            traces = hutchinson_traces(model, workload.loss, workload.calib, names, int(o.get("seed", 0)),
                                       float(o.get("tol", 1e-2)), int(o.get("max_probes", 32)),
                                       int(o.get("min_probes", 8)), _needs_act(layers, space))
        check_finite(traces, "the Hessian trace")
        mods = dict(model.named_modules())
        scores = {n: traces.get(n, 0.0) / max(weight_of(mods[n]).numel(), 1) for n in names}
        return hawq_omega(layers, space, model, workload.calib, traces, self.name, scores)


class HessianEigProxy(Proxy):
    """HAWQ: top Hessian eigenvalue per layer (power iteration), times ||C(W) - W||^2.

    Options: ``tol`` (default 1e-3), ``max_iter`` (default 30), ``seed``; ``eigs`` (precomputed).
    Activation choices are weighted by the layer's weight eigenvalue times the activation MSE
    (a stand-in: HAWQ defines no activation eigenvalue).
    """

    name = "hessian_eig"

    def score(self, workload, layers, space) -> Sensitivity:
        o = self.options
        model = workload.model()
        names = [l.name for l in layers]
        eigs = o.get("eigs")
        if eigs is None:
            eigs = top_eigenvalues(model, workload.loss, workload.calib, names, int(o.get("seed", 0)),
                                   float(o.get("tol", 1e-3)), int(o.get("max_iter", 30)))
        check_finite(eigs, "the top Hessian eigenvalue")
        # Omega = lambda_max * ||dW||^2 bounds the quadratic term from above (HAWQ's ordering).
        mods = dict(model.named_modules())
        traces = {n: eigs.get(n, 0.0) * max(weight_of(mods[n]).numel(), 1) for n in names}
        if _needs_act(layers, space):
            for n in names:
                traces[ACT + n] = max(eigs.get(n, 0.0), 0.0)
        return hawq_omega(layers, space, model, workload.calib, traces, self.name, dict(eigs))


def check_finite(values: dict[str, float], what: str) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise AutocompError(f"{what} is not finite for {bad[0]!r}: check the model's loss on the calibration data")
