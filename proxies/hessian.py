"""Hessian proxies: ``hessian_trace`` (HAWQ-V2, Hutchinson) and ``hessian_eig`` (HAWQ, power iteration).

Two estimators of every layer's trace ``Tr(H_ll)``, chosen per batch (``estimator="auto"``):

* ``ggn`` -- exact where it applies, and several times cheaper. When the model's output is
  piecewise linear in each block (ReLU/max-pool/eval-BatchNorm/residual CNNs and MLPs: checked on
  the autograd graph, op by op), the second derivative of the output in that block vanishes and
  ``H_ll = J_l^T A J_l`` exactly, with ``A`` the loss's Hessian in the outputs (per sample, PSD for
  cross-entropy or squared error). With ``A_n = S_n S_n^T`` and a Rademacher probe ``u`` over the
  outputs, ``E ||J_l^T S u||^2 = Tr(H_ll)``: one backward pass per probe (no double backward), a
  non-negative estimate per layer, and a variance bounded by the output dimension rather than by
  the off-diagonal Hessian mass.
* ``hvp`` -- any model: one Hessian-vector product (reverse over reverse) with a Rademacher probe
  ``v`` spanning every layer gives every layer's estimate at once: ``E[v_l . (H v)_l] = Tr(H_ll)``
  because the cross blocks average out.

Attention: double backward through PyTorch's fused scaled-dot-product kernels (flash, memory
efficient: what transformers' default ``sdpa`` attention dispatches to) is not implemented, so
while a batch's graph is built the math kernel is forced (``sdpa_kernel(SDPBackend.MATH)``: plain
ops autograd can differentiate twice). The model and its config are not touched, and the kernel
choice is restored when scoring ends.

Only the quantizable weights (plus, when the space quantizes activations, the layers' inputs) are
differentiated, not every BatchNorm scale and bias.

Probes are numbered; probe ``i`` on batch ``b`` draws from a generator seeded by ``(seed, b, i)``,
so any split of probes or batches over Ray tasks reproduces the serial result exactly.

Sensitivity (HAWQ-V2): omega(l, c) = Tr(H_W)/n_W * ||C(W) - W||^2 + Tr(H_x) * MSE_act(c.a_bits),
where the activation term is the same estimate for the layer's input (its trace is taken for the
mean loss of the batch, so the per-element squared error needs no further scaling).

``quantizer`` (both proxies): the quantizer whose weights give ``C(W)``, as the evaluation will
apply them (``rtn`` by default). Under a quantizer that uses calibration statistics (``gptq``,
``awq``, bias correction), ``||C(W) - W||^2`` is the input-weighted output error of
:mod:`autocomp.proxies._perturb` (the K-FAC form of the same Omega), computed in Ray parts of
layers with the statistics collected once per part.

Example:
    >>> from autocomp.proxies import get_proxy
    >>> sens = get_proxy("hessian_trace", max_probes=32).score(wl, layers, space)  # doctest: +SKIP
    >>> [p.kind for p in get_proxy("hessian_trace").parts(wl, layers, space)]     # doctest: +SKIP
    ['batch', 'batch', 'batch', 'batch']
"""
from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from autocomp.errors import AutocompError
from autocomp.modules import call_model, weight_of
from autocomp.proxies._base import Part, Proxy, layer_groups
from autocomp.proxies._omega import ACT, hawq_omega, layer_norms
from autocomp.proxies._options import at_least, require
from autocomp.proxies._perturb import check_spec, is_default
from autocomp.proxies.zero_cost import needs_act_quant
from autocomp.sensitivity import Sensitivity



def probe(like: torch.Tensor, seed: int, batch: int, index: int) -> torch.Tensor:
    """Rademacher vector (entries +-1) for probe ``index`` of ``batch``; the same everywhere."""
    g = torch.Generator().manual_seed(_mix(seed, batch, index))
    # Drawn on the CPU whatever the device: the same probe on every machine.
    v = torch.randint(0, 2, like.shape, generator=g, dtype=torch.int8).to(like.dtype) * 2 - 1
    return v if like.device.type == "cpu" else v.to(like.device)


def _mix(*xs: int) -> int:
    """A seed from integers, identical in every process (``hash`` of str is salted per process)."""
    h = 1469598103934665603
    for x in xs:
        h = ((h ^ (int(x) & 0xFFFF_FFFF)) * 1099511628211) & 0x7FFF_FFFF_FFFF_FFFF
    return h


ESTIMATORS = ("auto", "hvp", "ggn")
MAX_GGN_OUTPUTS = 256  # per-sample outputs above this (e.g. a vocabulary) use HVPs: A would be too big


@dataclass
class _Graph:
    """The first-order gradient graph of one batch, kept for repeated Hessian-vector products."""

    keys: list[str]          # block names: layer names, then "act:<layer>" blocks
    variables: list[torch.Tensor]
    grads: tuple[torch.Tensor, ...]
    estimator = "hvp"

    def hvp(self, vs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(self.grads, self.variables, grad_outputs=list(vs), retain_graph=True)

    def values(self, seed: int, batch: int, index: int) -> dict[str, float]:
        vs = [probe(v, seed, batch, index) for v in self.variables]
        return {k: float((v * h).sum()) for k, v, h in zip(self.keys, vs, self.hvp(vs))}


@dataclass
class _GGNGraph:
    """The forward graph of one batch and the loss curvature's square root in the outputs.

    ``root[n] @ root[n].T`` is the Hessian of the batch loss in sample ``n``'s outputs; a probe is
    one vector-Jacobian product of ``root u`` and gives ``||J_l^T root u||^2`` for every block.
    """

    keys: list[str]
    variables: list[torch.Tensor]
    out: torch.Tensor
    root: torch.Tensor       # (N, K, K)
    estimator = "ggn"

    def values(self, seed: int, batch: int, index: int) -> dict[str, float]:
        n, k = self.root.shape[:2]
        u = probe(self.root.new_empty(n, k), seed, batch, index)
        w = torch.bmm(self.root, u.unsqueeze(-1)).reshape(self.out.shape)
        gs = torch.autograd.grad(self.out, self.variables, grad_outputs=w, retain_graph=True, allow_unused=True)
        return {key: 0.0 if g is None else float((g * g).sum()) for key, g in zip(self.keys, gs)}


# Ops whose output is linear in their differentiable inputs (any of them at once).
_LINEAR = frozenset("""
AddBackward SubBackward RsubBackward NegBackward CatBackward StackBackward ViewBackward UnsafeViewBackward
ReshapeAliasBackward ExpandBackward PermuteBackward TransposeBackward TBackward SqueezeBackward
UnsqueezeBackward CloneBackward SliceBackward SelectBackward IndexBackward IndexSelectBackward GatherBackward
SumBackward MeanBackward AdaptiveAvgPool1DBackward AdaptiveAvgPool2DBackward AdaptiveAvgPool3DBackward
AvgPool2DBackward AvgPool3DBackward ConstantPadNdBackward ReflectionPad1DBackward ReflectionPad2DBackward
ReplicationPad1DBackward ReplicationPad2DBackward AsStridedBackward SplitBackward SplitWithSizesBackward
UnbindBackward ToCopyBackward AliasBackward RepeatBackward RollBackward FlipBackward PixelShuffleBackward
PixelUnshuffleBackward UpsampleNearest1DBackward UpsampleNearest2DBackward UpsampleBilinear2DBackward
DiagonalBackward UnfoldBackward Im2ColBackward Col2ImBackward WhereBackward MaskedFillBackward
NativeDropoutBackward NarrowBackward
""".split())
# Piecewise-linear ops (linear on each piece, so their second derivative vanishes almost everywhere).
_PIECEWISE = frozenset("""
ReluBackward ThresholdBackward HardtanhBackward LeakyReluBackward MaxPool2DWithIndicesBackward
MaxPool3DWithIndicesBackward AdaptiveMaxPool1DBackward AdaptiveMaxPool2DBackward ClampBackward ClampMinBackward
ClampMaxBackward AbsBackward MaximumBackward MinimumBackward AmaxBackward AminBackward MaxBackward MinBackward
""".split())
# Ops linear in each operand separately: fine while at most one operand depends on the block.
_BILINEAR = {"MulBackward": (0, 1), "MmBackward": (0, 1), "BmmBackward": (0, 1), "MvBackward": (0, 1),
             "DotBackward": (0, 1), "AddmmBackward": (1, 2), "BaddbmmBackward": (1, 2), "AddmvBackward": (1, 2),
             "ConvolutionBackward": (0, 1), "PreluKernelBackward": (0, 1)}


def _op_is_linear(node: Any, slots: set[int]) -> bool:
    """Whether ``node``'s output is (piecewise) linear in its inputs at ``slots`` taken together."""
    name = type(node).__name__.rstrip("0123456789")
    if name in _LINEAR or name in _PIECEWISE:
        return True
    if name in _BILINEAR:
        return len(slots & set(_BILINEAR[name])) <= 1
    if name == "DivBackward":                      # x / c is linear in x only
        return slots <= {0}
    if name in ("NativeBatchNormBackward", "CudnnBatchNormBackward", "MiopenBatchNormBackward"):
        # eval mode: an affine map with fixed statistics (unknown mode: not linear)
        return not bool(getattr(node, "_saved_training", True)) and len(slots & {0, 1}) <= 1
    return False


def output_is_piecewise_linear(out: torch.Tensor, variables: Sequence[torch.Tensor]) -> bool:
    """True when every op between each variable and ``out`` is (piecewise) linear in that variable.

    Walks the autograd graph of ``out``: for each variable, the ops that depend on it must be
    linear (views, sums, pooling, convolutions/matmuls with the other operand fixed, eval-mode
    BatchNorm) or piecewise linear (ReLU, max-pool, clamp). Any other op (GELU, softmax, LayerNorm,
    training-mode BatchNorm, a product of two tensors that both depend on the block, a custom
    autograd function) makes the answer False. Then the output's second derivative in each block
    is zero almost everywhere, and the block Hessian of the loss is exactly ``J^T A J``.
    """
    root = out.grad_fn
    if root is None:
        return False
    consumers: dict[Any, list[Any]] = defaultdict(list)
    seen, stack, leaves = {root}, [root], {}
    while stack:
        node = stack.pop()
        if hasattr(node, "variable"):
            leaves[id(node.variable)] = node
        for child, _ in node.next_functions:
            if child is None:
                continue
            consumers[child].append(node)
            if child not in seen:
                seen.add(child)
                stack.append(child)
    for v in variables:
        start = v.grad_fn if v.grad_fn is not None else leaves.get(id(v))
        if start is None or start not in seen:
            continue
        dep, stack = {start}, [start]
        while stack:
            for c in consumers.get(stack.pop(), ()):
                if c not in dep:
                    dep.add(c)
                    stack.append(c)
        for node in dep - {start}:
            slots = {i for i, (child, _) in enumerate(node.next_functions) if child in dep}
            if not _op_is_linear(node, slots):
                return False
    return True


def loss_curvature_root(out: torch.Tensor, target: Any, loss_fn) -> torch.Tensor | None:
    """``S`` with ``S[n] S[n]^T`` = the loss Hessian in sample ``n``'s outputs, or None.

    None when the loss couples samples (its Hessian in the outputs is not block diagonal), is not
    convex in the outputs (a negative eigenvalue: the Gauss-Newton form needs ``A >= 0``), or the
    per-sample output is too large to build ``A`` (``MAX_GGN_OUTPUTS``).
    """
    if out.dim() == 0:
        return None
    n = out.shape[0]
    k = out.numel() // max(n, 1)
    if n == 0 or k > MAX_GGN_OUTPUTS:
        return None
    # In float64: a confident classifier's curvature is tiny (1e-5 here) and float32 rounding
    # alone would show as negative eigenvalues of the same order.
    z = out.detach().double().requires_grad_(True)
    try:
        g = torch.autograd.grad(loss_fn(z, target), z, create_graph=True)[0]
    except (RuntimeError, TypeError):                  # a loss that insists on its own dtype
        z = out.detach().requires_grad_(True)
        g = torch.autograd.grad(loss_fn(z, target), z, create_graph=True)[0]
    if not g.requires_grad:                            # loss linear in the outputs: A = 0
        return out.new_zeros(n, k, k)
    g = g.reshape(n, k)
    sign = (torch.arange(n, dtype=z.dtype, device=z.device) % 2) * 2 - 1
    rows, signed = [], []
    for c in range(k):
        rows.append(torch.autograd.grad(g[:, c].sum(), z, retain_graph=True)[0].reshape(n, k))
        signed.append(torch.autograd.grad((g[:, c] * sign).sum(), z, retain_graph=True)[0].reshape(n, k))
    a, a_signed = torch.stack(rows, 1).detach(), torch.stack(signed, 1).detach()   # (N, K, K)
    scale = float(a.abs().max()) or 1.0
    if float((a_signed - sign.view(n, 1, 1) * a).abs().max()) > 1e-5 * scale:
        return None                                    # cross-sample curvature: not per-sample
    a = (a + a.transpose(1, 2)) / 2
    evals, evecs = torch.linalg.eigh(a.double())
    tol = 1e-9 if z.dtype == torch.float64 else 1e-4
    if float(evals.min()) < -tol * max(float(evals.abs().max()), 1e-30):
        return None
    return (evecs * evals.clamp_min(0).sqrt().unsqueeze(1)).to(out.dtype)


class _Grad:
    """Context: weights of ``names`` require grad (others not), layer inputs captured if asked,
    and attention on the math kernel (twice differentiable) for the graphs built inside."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str], activations: bool):
        self.model, self.names, self.activations = model, list(names), activations
        self.mods = dict(model.named_modules())
        self.inputs: dict[str, torch.Tensor] = {}

    def __enter__(self) -> "_Grad":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        self.saved = {p: p.requires_grad for p in self.model.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        for n in self.names:
            self.mods[n].weight.requires_grad_(True)
        self.kernel = sdpa_kernel(SDPBackend.MATH)
        self.kernel.__enter__()
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
        self.kernel.__exit__(None, None, None)
        for h in self.handles:
            h.remove()
        for p, r in self.saved.items():
            p.requires_grad_(r)
            p.grad = None

    def graph(self, batch, loss_fn, estimator: str = "auto") -> _Graph | _GGNGraph:
        """The batch's graph for ``estimator``: ``ggn`` when asked, or under ``auto`` when exact."""
        if estimator not in ESTIMATORS:
            raise AutocompError(f"unknown Hessian trace estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")
        self.inputs.clear()
        x, y = batch
        out = call_model(self.model, x)
        keys = list(self.names)
        variables = [self.mods[n].weight for n in self.names]
        if self.activations:
            for n in self.names:
                if n in self.inputs:
                    keys.append(ACT + n)
                    variables.append(self.inputs[n])
        if estimator != "hvp" and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            if estimator == "ggn" or output_is_piecewise_linear(out, variables):
                root = loss_curvature_root(out, y, loss_fn)
                if root is not None:
                    return _GGNGraph(keys, variables, out, root)
            if estimator == "ggn":
                raise AutocompError("the Gauss-Newton trace needs a per-sample loss convex in the model's outputs "
                                    f"(at most {MAX_GGN_OUTPUTS} per sample): use estimator='hvp'")
        grads = torch.autograd.grad(loss_fn(out, y), variables, create_graph=True, allow_unused=True)
        # Blocks the loss does not reach have a zero Hessian: drop them.
        keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return _Graph([keys[i] for i in keep], [variables[i] for i in keep], tuple(grads[i] for i in keep))


def probe_values(model: torch.nn.Module, loss_fn, batch, names: Sequence[str], probe_ids: Sequence[int],
                 seed: int = 0, batch_index: int = 0, activations: bool = False,
                 estimator: str = "auto") -> list[dict[str, float]]:
    """One trace estimate per block for each probe id on one batch (one product per probe).

    ``estimator``: ``hvp`` (``v_l . (H v)_l``), ``ggn`` (``||J_l^T S u||^2``, exact for models
    piecewise linear in each block), or ``auto`` (``ggn`` where exact, else ``hvp``).

    Example:
        >>> vals = probe_values(model, wl.loss, wl.calib[0], ["fc"], range(8))  # doctest: +SKIP
    """
    with _Grad(model, names, activations) as ctx:
        g = ctx.graph(batch, loss_fn, estimator)
        return [g.values(seed, batch_index, i) for i in probe_ids]


def chosen_estimator(model: torch.nn.Module, loss_fn, batch, names: Sequence[str], activations: bool = False,
                     estimator: str = "auto") -> str:
    """Which estimator ``auto`` (or the given one) runs on this model and batch: ``ggn`` or ``hvp``."""
    with _Grad(model, names, activations) as ctx:
        return ctx.graph(batch, loss_fn, estimator).estimator


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
                 first_probe: int = 0, estimator: str = "auto") -> tuple[dict[str, float], int]:
    """Per-block Hutchinson traces of one batch; returns (traces, probes used)."""
    with _Grad(model, names, activations) as ctx:
        g = ctx.graph(batch, loss_fn, estimator)
        vals: list[dict[str, float]] = []
        for i in range(first_probe, first_probe + max_probes):
            vals.append(g.values(seed, batch_index, i))
            if stop_index([sum(d.values()) for d in vals], tol, min_probes) == len(vals):
                break
    return reduce_probes(vals, len(vals)), len(vals)


def reduce_probes(vals: Sequence[dict[str, float]], k: int) -> dict[str, float]:
    keys = vals[0].keys() if vals else ()
    return {key: sum(d[key] for d in vals[:k]) / max(k, 1) for key in keys}


def hutchinson_traces(model, loss_fn, batches, names, seed: int = 0, tol: float = 1e-3, max_probes: int = 64,
                      min_probes: int = 4, activations: bool = False, estimator: str = "auto") -> dict[str, float]:
    """Per-layer Hessian traces averaged over calibration batches (weighted by batch size).

    Example:
        >>> tr = hutchinson_traces(wl.model(), wl.loss, wl.calib, ["features.0"])  # doctest: +SKIP
    """
    parts = []
    for b, batch in enumerate(batches):
        tr, _ = batch_traces(model, loss_fn, batch, names, seed, b, tol, max_probes, min_probes, activations,
                             estimator=estimator)
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
        graphs = [(ctx.graph(b, loss_fn, "hvp"), int(b[1].shape[0])) for b in batches]
        total = sum(w for _, w in graphs)
        for n in names:
            w = mods[n].weight
            g = torch.Generator().manual_seed(_mix(seed, 1 << 20, zlib.crc32(n.encode())))
            v = torch.randn(w.shape, generator=g, dtype=w.dtype).to(w.device)
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


PERTURB_GROUPS = 4   # layer groups of hessian_trace's perturbation parts (the trace parts are batches)


def _needs_act(layers, space) -> bool:
    return needs_act_quant(space.choices(layers))


class HessianTraceProxy(Proxy):
    """HAWQ-V2: average Hessian trace per layer (Hutchinson), times the choice's perturbation.

    Options: ``tol`` (relative, default 1e-2), ``max_probes`` (per batch, default 32),
    ``min_probes`` (default 8), ``seed``, ``estimator`` (``auto`` | ``hvp`` | ``ggn``, see the
    module docstring), ``probe_chunk`` (probes per part of a single-batch run, default 4),
    ``quantizer`` (whose weights give ``C(W)``, default ``rtn``).

    Split: one part per calibration batch, each with its own stopping rule. With a single batch,
    parts of ``probe_chunk`` probes in probe order; :meth:`done` holds once the serial stopping
    rule has fired, and :meth:`combine` keeps the probes the serial loop would have used. Under
    a quantizer other than ``rtn``, :data:`PERTURB_GROUPS` parts of layers come first, each
    quantizing its layers with statistics it collects once.
    """

    name = "hessian_trace"

    @dataclass(frozen=True)
    class Options:
        tol: float = 1e-2
        max_probes: int = 32
        min_probes: int = 8
        estimator: str = "auto"
        seed: int = 0
        probe_chunk: int = 4
        quantizer: str = "rtn"

        def __post_init__(self) -> None:
            at_least(self, tol=0, max_probes=1, min_probes=1, probe_chunk=1)
            require(self.estimator in ESTIMATORS,
                    f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
            check_spec(self.quantizer)

    def parts(self, workload, layers, space) -> list[Part]:
        o = self.config
        # First, so that the early stop of the probe parts (a prefix) never drops them.
        perturb = ([] if is_default(o.quantizer, space) else
                   [Part("perturb", layers=p.layers) for p in layer_groups(layers, PERTURB_GROUPS)])
        if len(workload.calib) != 1:
            return perturb + [Part("batch", batch=b) for b in range(len(workload.calib))]
        return perturb + [Part("probes", batch=0, probes=tuple(range(i, min(i + o.probe_chunk, o.max_probes))))
                          for i in range(0, o.max_probes, o.probe_chunk)]

    def score_part(self, workload, layers, space, part: Part) -> dict[str, Any]:
        o = self.config
        if part.kind == "perturb":
            return {"norms": layer_norms(o.quantizer, workload, layers, space, part.layers)}
        names = [l.name for l in layers]
        batch = workload.calib[part.batch]
        acts = _needs_act(layers, space)
        if part.kind == "probes":
            return {"values": probe_values(workload.model(), workload.loss, batch, names, part.probes, o.seed,
                                           part.batch, acts, o.estimator)}
        tr, used = batch_traces(workload.model(), workload.loss, batch, names, o.seed, part.batch, o.tol,
                                o.max_probes, o.min_probes, acts, estimator=o.estimator)
        return {"traces": tr, "weight": int(batch[1].shape[0]), "probes": used}

    def _kept(self, results) -> tuple[list[dict[str, float]], int | None]:
        vals = [d for r in results for d in r["values"]]
        return vals, stop_index([sum(d.values()) for d in vals], self.config.tol, self.config.min_probes)

    def done(self, workload, layers, space, results) -> bool:
        results = [r for r in results if "norms" not in r]
        return bool(results) and "values" in results[0] and self._kept(results)[1] is not None

    def combine(self, workload, layers, space, results) -> Sensitivity:
        norms = {n: v for r in results if "norms" in r for n, v in r["norms"].items()}
        results = [r for r in results if "norms" not in r]
        if results and "values" in results[0]:
            vals, k = self._kept(results)
            traces = reduce_probes(vals, k or len(vals))
        else:
            traces = combine_batches([(r["traces"], r["weight"]) for r in results])
        check_finite(traces, "the Hessian trace")
        model = workload.model()
        mods = dict(model.named_modules())
        names = [l.name for l in layers]
        scores = {n: traces.get(n, 0.0) / max(weight_of(mods[n]).numel(), 1) for n in names}
        return hawq_omega(layers, space, model, workload.calib, traces, self.name, scores, norms or None)


class HessianEigProxy(Proxy):
    """HAWQ: top Hessian eigenvalue per layer (power iteration), times ||C(W) - W||^2.

    Options: ``tol`` (default 1e-3), ``max_iter`` (default 30), ``seed``, ``groups`` (layer
    groups the work is split into, default 4), ``quantizer`` (whose weights give ``C(W)``,
    default ``rtn``; each group quantizes its own layers). Activation choices are weighted by the layer's
    weight eigenvalue times the activation MSE (a stand-in: HAWQ defines no activation eigenvalue).
    """

    name = "hessian_eig"

    @dataclass(frozen=True)
    class Options:
        tol: float = 1e-3
        max_iter: int = 30
        seed: int = 0
        groups: int = 4
        quantizer: str = "rtn"

        def __post_init__(self) -> None:
            at_least(self, tol=0, max_iter=1, groups=1)
            check_spec(self.quantizer)

    def parts(self, workload, layers, space) -> list[Part]:
        return layer_groups(layers, self.config.groups)

    def score_part(self, workload, layers, space, part: Part) -> dict[str, Any]:
        o = self.config
        out = {"eigs": top_eigenvalues(workload.model(), workload.loss, workload.calib, list(part.layers), o.seed,
                                       o.tol, o.max_iter)}
        if not is_default(o.quantizer, space):
            out["norms"] = layer_norms(o.quantizer, workload, layers, space, part.layers)
        return out

    def combine(self, workload, layers, space, results) -> Sensitivity:
        found = {k: v for r in results for k, v in r["eigs"].items()}
        norms = {k: v for r in results for k, v in r.get("norms", {}).items()}
        names = [l.name for l in layers]
        eigs = {n: found[n] for n in names if n in found}
        check_finite(eigs, "the top Hessian eigenvalue")
        # Omega = lambda_max * ||dW||^2 bounds the quadratic term from above (HAWQ's ordering).
        model = workload.model()
        mods = dict(model.named_modules())
        traces = {n: eigs.get(n, 0.0) * max(weight_of(mods[n]).numel(), 1) for n in names}
        if _needs_act(layers, space):
            for n in names:
                traces[ACT + n] = max(eigs.get(n, 0.0), 0.0)
        return hawq_omega(layers, space, model, workload.calib, traces, self.name, dict(eigs), norms or None)


def check_finite(values: dict[str, float], what: str) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise AutocompError(f"{what} is not finite for {bad[0]!r}: check the model's loss on the calibration data")
