"""``lrp``: layer-wise relevance propagation (LRP-QViT) as a per-layer contribution score.

Relevance starts as the target logit and flows back layer by layer. It is implemented as
"gradient x input" on a forward pass whose backward is rewritten per module (the modified-
gradient trick used by zennit), so any graph autograd can walk is handled:

* Linear / Conv: epsilon (default), z+ or gamma rule:
  ``R_in = x * W'^T (R_out / stab(z'))`` with ``z' = x W'^T + b'``.
* BatchNorm: epsilon rule on the affine map. LayerNorm: the LN rule (standard deviation held
  constant, so centring and scaling are linear), then epsilon.
* Element-wise activations (ReLU, GELU, SiLU, Tanh, ..., and every module of
  ``transformers.activations``: ``NewGELUActivation``, ``GELUActivation``, ...): identity rule
  (relevance passes as is).
* Pooling and flattening: gradient x input (max pooling sends relevance to the winner, average
  pooling shares it); residual additions: split in proportion to each summand (a + b: ``a * g``
  and ``b * g``), which gradient x input does exactly.
* Softmax attention: the attention weights are held constant (AH rule), so relevance flows to the
  values only, and ``softmax(s) @ v`` is linear in ``v``: relevance is conserved through it.
  Inside the context every softmax returns constant weights, and
  ``F.scaled_dot_product_attention`` (transformers' default ``sdpa`` attention, whatever kernel
  it would pick) is computed as ``softmax(q k^T * scale + mask) @ v`` with constant weights
  (:func:`held_attention`), through a torch function mode; the model and its config are not
  touched. Modules of one's own can also read ``lrp_mode`` (see
  :class:`autocomp.workloads.digits_vit.AttnMatmul`).
* Embedding lookups (integer inputs): a lookup selects rows, so a layer's input relevance is its
  output relevance (there is no float input to hold it).
* Sequence outputs (``[B, T, V]`` logits of a causal LM): every position's target logit (its
  predicted next token by default) seeds relevance; a sample's target is their sum.

Conservation: the relevance summed at any layer's input equals the target logit up to what
biases and epsilon absorb; :func:`relevance_per_layer` reports it per layer.

Layer contribution score: mean over samples of ``sum |R_in(l)| / sum_t |f_target,t|`` (one
position for a classifier). The sensitivity is
that score times the choice's relative perturbation (see :mod:`autocomp.proxies._omega`).

Example:
    >>> from autocomp.proxies.lrp import relevance_per_layer
    >>> rel = relevance_per_layer(model, x, ["0", "2"])              # doctest: +SKIP
    >>> rel.layer_input["2"].sum(1)  # ~ rel.target per sample       # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from autocomp.errors import AutocompError
from autocomp.modules import call_model, is_quantizable, is_transposed
from autocomp.proxies._base import Part, Proxy
from autocomp.proxies._omega import relative_omega
from autocomp.proxies._options import at_least, require
from autocomp.sensitivity import Sensitivity

RULES = ("epsilon", "zplus", "gamma")
_ACTIVATIONS = (torch.nn.ReLU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.LeakyReLU,
                torch.nn.ReLU6, torch.nn.Hardswish, torch.nn.ELU, torch.nn.Mish)
_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)`` with sign(0) = +1 (zennit's convention)."""
    return z + ((z == 0).to(z.dtype) + z.sign()) * eps


def _swap(out: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """Value of ``out``; gradient through ``z`` scaled by ``out / stab(z)``."""
    return out.detach() + (z - z.detach()) * (out / stabilize(z, eps)).detach()


def _modified(mod: torch.nn.Module, x: torch.Tensor, rule: str, gamma: float) -> torch.Tensor:
    w = mod.weight
    b = getattr(mod, "bias", None)
    if rule == "zplus":
        w, b = w.clamp(min=0), (b.clamp(min=0) if b is not None else None)
    elif rule == "gamma":
        w, b = w + gamma * w.clamp(min=0), (b + gamma * b.clamp(min=0) if b is not None else None)
    if isinstance(mod, torch.nn.Linear):
        return F.linear(x, w, b)
    if isinstance(mod, torch.nn.Conv2d):
        return F.conv2d(x, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)
    if isinstance(mod, torch.nn.Conv1d):
        return F.conv1d(x, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)
    if is_transposed(mod):  # transformers' GPT-2 layer: x @ W + b
        out = x @ w
        return out + b if b is not None else out
    raise AutocompError(f"lrp: no rule for {type(mod).__name__}")


def held_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                   enable_gqa: bool = False) -> torch.Tensor:
    """``scaled_dot_product_attention`` with the attention weights held constant (the AH rule).

    The same value as PyTorch's (math kernel, no dropout: relevance is taken in eval mode); the
    gradient reaches ``value`` only.

    Example:
        >>> q = torch.randn(1, 2, 3, 4)
        >>> bool(torch.allclose(held_attention(q, q, q, is_causal=True),
        ...                     F.scaled_dot_product_attention(q, q, q, is_causal=True), atol=1e-6))
        True
    """
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
    s = query.shape[-1] ** -0.5 if scale is None else scale
    scores = query @ key.transpose(-2, -1) * s
    low = torch.finfo(scores.dtype).min
    if is_causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, low)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, low) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.softmax(scores, dim=-1).detach() @ value


class _HeldAttention(TorchFunctionMode):
    """Every softmax gives constant weights; SDPA runs as :func:`held_attention`."""

    _SOFTMAX = (torch.softmax, F.softmax, torch.Tensor.softmax, torch.special.softmax)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return held_attention(*args, **kwargs)
        out = func(*args, **kwargs)
        return out.detach() if func in self._SOFTMAX else out


def _is_activation(mod: torch.nn.Module) -> bool:
    """An element-wise activation module (torch's, or any of transformers' ``activations``)."""
    if isinstance(mod, _ACTIVATIONS):
        return True
    return type(mod).__module__.startswith("transformers.activations")


@dataclass
class Relevance:
    """Per-sample relevance: ``target`` [B]; ``layer_input``/``layer_output`` name -> [B] sums.

    ``target_abs`` [B]: the sum of the target logits' magnitudes (``|target|`` for a classifier).
    """

    target: torch.Tensor
    layer_input: dict[str, torch.Tensor]
    layer_output: dict[str, torch.Tensor]
    layer_input_abs: dict[str, torch.Tensor]
    target_abs: torch.Tensor | None = None


class LRPContext:
    """Installs the relevance rules on ``model`` for the duration of a ``with`` block.

    Args:
        rules: per layer name, one of ``epsilon``, ``zplus``, ``gamma`` (default ``epsilon``).
        eps: the epsilon stabiliser; gamma: the gamma rule's weight on positive parts.
        record: layer names whose input and output relevance are recorded.
    """

    def __init__(self, model: torch.nn.Module, record: Sequence[str] = (), rules: dict[str, str] | None = None,
                 eps: float = 1e-6, gamma: float = 0.25, default_rule: str = "epsilon"):
        if default_rule not in RULES or any(r not in RULES for r in (rules or {}).values()):
            raise AutocompError(f"lrp: rules must be one of {', '.join(RULES)}")
        self.model, self.record = model, set(record)
        self.rules, self.eps, self.gamma, self.default_rule = dict(rules or {}), eps, gamma, default_rule
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}

    def __enter__(self) -> "LRPContext":
        self.attention = _HeldAttention()
        self.attention.__enter__()
        self.handles, self.flags = [], []
        self.saved = {p: p.requires_grad for p in self.model.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        for name, mod in self.model.named_modules():
            if hasattr(mod, "lrp_mode"):
                self.flags.append((mod, mod.lrp_mode))
                mod.lrp_mode = True
            hook = self._hook_for(name, mod)
            if hook is not None:
                self.handles.append(mod.register_forward_hook(hook))
            if name in self.record:
                self.handles.append(mod.register_forward_pre_hook(self._record_input(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.attention.__exit__(None, None, None)
        for h in self.handles:
            h.remove()
        for mod, v in self.flags:
            mod.lrp_mode = v
        for p, r in self.saved.items():
            p.requires_grad_(r)

    def _record_input(self, name: str):
        def pre(mod, args):
            x = args[0] if args else None
            if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
                return None          # token ids: an embedding's relevance is read at its output
            if not x.requires_grad:  # the model's input: a leaf whose gradient we can read
                x = x.detach().requires_grad_(True)
            else:
                x.retain_grad()
            self.inputs.setdefault(name, x)
            return (x,) + tuple(args[1:])
        return pre

    def _hook_for(self, name: str, mod: torch.nn.Module):
        eps = self.eps
        if is_quantizable(mod):
            rule = self.rules.get(name, self.default_rule)

            def lin(m, args, out):
                # A lookup has no float input to apply a rule to: relevance passes through it.
                x = args[0] if args else None
                lookup = not (isinstance(x, torch.Tensor) and x.is_floating_point())
                if lookup:
                    return self._keep(name, out)
                z = out if rule == "epsilon" else _modified(m, x, rule, self.gamma)
                return self._keep(name, _swap(out, z, eps))
            return lin
        if isinstance(mod, _NORMS):
            return lambda m, args, out: self._keep(name, _swap(out, out, eps))
        if isinstance(mod, torch.nn.LayerNorm):
            def ln(m, args, out):
                x = args[0]
                dims = tuple(range(-len(m.normalized_shape), 0))
                mu = x.mean(dim=dims, keepdim=True)
                std = (x.var(dim=dims, keepdim=True, unbiased=False) + m.eps).sqrt().detach()
                z = (x - mu) / std
                if m.weight is not None:
                    z = z * m.weight
                if m.bias is not None:
                    z = z + m.bias
                return self._keep(name, _swap(out, z, eps))
            return ln
        if _is_activation(mod) and not isinstance(mod, torch.nn.ReLU):
            # Identity rule: relevance passes unchanged (d out / d x taken as out / x).
            return lambda m, args, out: self._keep(name, _swap(out, args[0], eps))
        if name in self.record:
            return lambda m, args, out: self._keep(name, out)
        return None

    def _keep(self, name: str, out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):     # a block's output object: only its input is read
            return out
        if name in self.record and not out.requires_grad and out.is_floating_point():
            # Nothing before it is differentiated (an embedding of token ids, weights frozen):
            # the graph starts here, at a leaf whose gradient is read.
            out = out.detach().requires_grad_(True)
        if name in self.record and out.requires_grad:
            out.retain_grad()
            self.outputs.setdefault(name, out)
        return out


def relevance_per_layer(model: torch.nn.Module, x, names: Sequence[str], target: torch.Tensor | None = None,
                        **rule_options: Any) -> Relevance:
    """Relevance of the target logit (predicted class by default) at each named layer.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.ReLU(),
        ...                         torch.nn.Linear(3, 2, bias=False))
        >>> r = relevance_per_layer(m, torch.randn(5, 4, generator=g), ["0", "2"])
        >>> # conserved, up to what the epsilon rule absorbs
        >>> bool(torch.allclose(r.layer_input["0"], r.target, rtol=1e-4, atol=1e-5))
        True
    """
    model.eval()
    with LRPContext(model, names, **rule_options) as ctx:
        out = call_model(model, x)
        logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
        if logits is None:
            logits = out[0]
        if target is None:
            target = logits.argmax(dim=-1)
        onehot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
        picked = (logits * onehot).sum(-1).detach()       # [B], or [B, T] for a sequence
        fx = picked if picked.dim() == 1 else picked.flatten(1).sum(1)
        fx_abs = picked.abs() if picked.dim() == 1 else picked.abs().flatten(1).sum(1)
        tensors = [t for t in list(ctx.inputs.values()) + list(ctx.outputs.values()) if t.requires_grad]
        if not tensors:
            raise AutocompError("lrp: no recorded layer is on the path to the output")
        (logits * onehot).sum().backward(inputs=tensors)
        per = lambda t: (t * t.grad).detach().flatten(1).sum(1) if t.grad is not None else torch.zeros_like(fx)  # noqa: E731
        per_abs = lambda t: (t * t.grad).detach().flatten(1).abs().sum(1) if t.grad is not None else torch.zeros_like(fx)  # noqa: E731
        # An embedding's input is token ids: its relevance is the relevance of the rows it selected.
        inputs = {**{n: t for n, t in ctx.outputs.items() if n not in ctx.inputs}, **ctx.inputs}
        return Relevance(fx, {n: per(t) for n, t in inputs.items()},
                         {n: per(t) for n, t in ctx.outputs.items()},
                         {n: per_abs(t) for n, t in inputs.items()}, fx_abs)


def contribution_scores(model: torch.nn.Module, batches, names: Sequence[str],
                        aliases: Mapping[str, Sequence[str]] | None = None, **rule_options: Any) -> dict[str, float]:
    """Mean over samples of ``sum |R_in(l)| / sum_t |f_target,t|`` for each layer (LRP-QViT's score).

    ``aliases``: per layer, the other modules sharing its weight (GPT-2's ``lm_head`` for
    ``transformer.wte``); compressing the weight changes every use, so their scores add up.
    """
    aliases = {n: tuple(aliases.get(n, ())) for n in names} if aliases else {n: () for n in names}
    total = {n: 0.0 for n in names}
    count = 0
    for x, _ in batches:
        r = relevance_per_layer(model, x, [m for n in names for m in (n, *aliases[n])], **rule_options)
        denom = r.target_abs.clamp_min(1e-12)
        for n in names:
            for m in (n, *aliases[n]):
                if m in r.layer_input_abs:
                    total[n] += float((r.layer_input_abs[m] / denom).sum())
        count += int(r.target.numel())
    return {n: v / max(count, 1) for n, v in total.items()}


class LRPProxy(Proxy):
    """LRP-QViT contribution score per layer times the choice's relative perturbation.

    Options: ``rule`` (epsilon | zplus | gamma, default epsilon), ``eps`` (1e-6), ``gamma`` (0.25).
    Split: one part per calibration batch; scores are averaged weighted by batch size.
    """

    name = "lrp"

    @dataclass(frozen=True)
    class Options:
        rule: str = "epsilon"
        eps: float = 1e-6
        gamma: float = 0.25

        def __post_init__(self) -> None:
            require(self.rule in RULES, f"unknown rule {self.rule!r}: use one of {', '.join(RULES)}")
            at_least(self, eps=0, gamma=0)

    def parts(self, workload, layers, space) -> list[Part]:
        return [Part("batch", batch=b) for b in range(len(workload.calib))]

    def score_part(self, workload, layers, space, part: Part) -> dict[str, Any]:
        o = self.config
        batch = workload.calib[part.batch]
        scores = contribution_scores(workload.model(), [batch], [l.name for l in layers],
                                     {l.name: tuple(getattr(l, "aliases", ())) for l in layers}, default_rule=o.rule,
                                     eps=o.eps, gamma=o.gamma)
        return {"scores": scores, "weight": int(batch[1].shape[0])}

    def combine(self, workload, layers, space, results) -> Sensitivity:
        total = sum(r["weight"] for r in results) or 1
        scores = {l.name: sum(r["scores"][l.name] * r["weight"] for r in results) / total for l in layers}
        return relative_omega(layers, space, workload.model(), workload.calib, scores, self.name)
