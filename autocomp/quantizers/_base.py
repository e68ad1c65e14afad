"""The quantizer base class: how one layer's float weight becomes the weight a choice stores.

A quantizer has a ``name``, a frozen ``Options`` dataclass, the calibration statistics it
``needs`` (a subset of :data:`STATS`), and :meth:`Quantizer.quantize_layer`, which returns the
layer's new weight (output channels first) and, optionally, a bias correction. The weight must be
representable in the choice's stored format (codes within range, one scale, and zero point, per
group or channel; pruned weights exactly zero) so that the kernels can run it.

Statistics are collected once per model from the float model's calibration inputs
(:func:`collect_stats`) and reused for every policy a worker evaluates: evaluating N policies
costs one calibration, not N. A quantizer that needs none (``rtn``) costs nothing extra.

:meth:`Quantizer.apply` is :func:`autocomp.policy.apply` with this quantizer: a compressed copy of
the model, weights from :meth:`quantize_layer`, inputs fake-quantized as the policy says.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice, Policy
    >>> from autocomp.quantizers import get_quantizer
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    >>> q = get_quantizer("rtn")
    >>> small = q.apply(model, Policy.from_choices({"0": Choice(4, 32)}), stats={})
    >>> len(torch.unique(small[0].weight[0])) <= 16
    True
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping

import torch

from autocomp.errors import AutocompError
from autocomp.modules import call_model, capture_inputs, inspecting, is_embedding, set_weight, weight_of
from autocomp.policy import ActFakeQuant, Choice, Policy, input_range, policy_modules
from autocomp.quant import compress_weight, is_float

#: the statistics a quantizer may ask for, per layer, over the calibration inputs:
#: ``hessian`` ``[K, K]`` = mean of x xᵀ over input rows (GPTQ's H/2), ``mean`` ``[K]`` mean input
#: row, ``absmean`` ``[K]`` mean |x| per input feature (AWQ's activation salience), ``rows`` the
#: number of input rows seen. For a convolution an input row is one unfolded patch (``in*kh*kw``).
STATS = ("hessian", "mean", "absmean")


@dataclass
class LayerStats:
    """Calibration statistics of one layer's input (see :data:`STATS`); float32, on the CPU."""

    rows: int = 0
    hessian: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    absmean: torch.Tensor | None = None
    #: what a quantizer derives from these statistics alone (e.g. GPTQ's inverse Cholesky factor),
    #: kept for the next policy: a sweep of N policies factorises each Hessian once, not N times.
    derived: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class LayerResult:
    """What :meth:`Quantizer.quantize_layer` returns.

    Attributes:
        weight: the new weight, output channels first, representable in the choice's format.
        bias_delta: added to the layer's bias (created if the layer has none), e.g. bias correction.
        input_scale: ``[K]`` per-input-column scale ``s`` (AWQ), or None: then ``weight * s`` (each
            input column ``k`` times ``s[k]``) is what is representable in the choice's format, and
            the layer's input is divided by ``s`` before the kernel runs (see :mod:`.awq`).
    """

    weight: torch.Tensor
    bias_delta: torch.Tensor | None = None
    input_scale: torch.Tensor | None = None


@dataclass(frozen=True)
class NoQuantizerOptions:
    """The options of a quantizer that takes none."""


class Quantizer:
    """Base class: subclasses set ``name``, ``Options``, ``needs`` and implement :meth:`quantize_layer`.

    Args:
        **options: fields of the quantizer's ``Options`` dataclass.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoQuantizerOptions
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any):
        fields = [f.name for f in dataclasses.fields(self.Options)]
        unknown = [k for k in options if k not in fields]
        if unknown:
            have = ", ".join(fields) if fields else "none"
            raise AutocompError(f"quantizer {self.name!r} has no option {unknown[0]!r}: its options are {have}")
        try:
            self.options = self.Options(**options)
        except (TypeError, ValueError) as e:
            raise AutocompError(f"quantizer {self.name!r}: {e}") from None

    @property
    def spec(self) -> str:
        """``name`` plus the options that differ from the defaults (``gptq(act_order=True)``)."""
        default = self.Options()
        diff = [f"{f.name}={getattr(self.options, f.name)!r}" for f in dataclasses.fields(self.Options)
                if getattr(self.options, f.name) != getattr(default, f.name)]
        return f"{self.name}({', '.join(diff)})" if diff else self.name

    @property
    def sequential(self) -> bool:
        """Whether :meth:`apply` collects each layer's statistics from the model compressed up to
        it (:mod:`.sequential`) instead of using the shared float-model ones: an option
        ``sequential`` when the quantizer has one."""
        return bool(getattr(self.options, "sequential", False))

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:  # pragma: no cover - abstract
        """The compressed weight of ``module`` (named ``name``) for ``choice``."""
        raise NotImplementedError

    def start_layer(self, name: str, module: torch.nn.Module, choice: Choice, stats: LayerStats | None,
                    fallback: bool = False, prunes_float: bool = False,
                    clip: bool = True) -> tuple[torch.Tensor, LayerResult | None]:
        """How a quantizer that uses statistics opens :meth:`quantize_layer`: the layer's float
        weight (detached, output channels first) and the result to return at once, or None when
        the layer is this quantizer's work, ``stats`` then checked to hold :attr:`needs`.

        The result at once is the weight as is for float bits without pruning, else rtn's
        (:func:`autocomp.quant.compress_weight`) for an embedding (no input statistics), for float
        bits with pruning (unless ``prunes_float``: the quantizer prunes itself) and when
        ``fallback`` (a choice the quantizer does not take), on rtn's clipped grid or, with
        ``clip=False``, the full range (the quantizer's own grid choice, ``gptq(clip=false)``).

        Example:
            >>> from autocomp.quantizers import get_quantizer
            >>> w, done = get_quantizer("gptq").start_layer("e", torch.nn.Embedding(5, 4), Choice(4, 32), None)
            >>> done is not None and tuple(done.weight.shape)
            (5, 4)
        """
        w = weight_of(module).detach()
        if is_float(choice.w_bits) and choice.prune <= 0:
            return w, LayerResult(w.clone())
        if is_embedding(module) or fallback or (is_float(choice.w_bits) and not prunes_float):
            return w, LayerResult(compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point,
                                                  clip=clip))
        require_stats(self, name, stats)
        return w, None

    def apply(self, model: torch.nn.Module, policy: Policy,
              act_ranges: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
              stats: Mapping[str, LayerStats] | None = None,
              batches: Iterable[Any] | None = None,
              results: dict[str, LayerResult] | None = None) -> torch.nn.Module:
        """A compressed copy of ``model`` following ``policy`` with this quantizer.

        Args:
            act_ranges: as for :func:`autocomp.policy.apply` (needed when inputs are quantized).
            stats: :func:`collect_stats` of the float model for :attr:`needs` (``{}`` when none).
            batches: calibration batches for :meth:`finalize` (model-level passes such as
                BatchNorm re-estimation); None skips it.
            results: filled with each compressed layer's :class:`LayerResult` when given (the
                kernels need AWQ's ``input_scale``).
        """
        out = copy.deepcopy(model)
        layers = list(policy_modules(out, policy))
        reached: dict[str, int] = {}
        if self.sequential and batches is not None:
            from autocomp.quantizers.sequential import execution_order, layer_inputs

            batches = list(batches)
            order = execution_order(out, [n for n, _, _ in layers], batches[0]) if batches else []
            reached = {n: i for i, n in enumerate(order)}
            layers.sort(key=lambda l: reached.get(l[0], len(reached)))
        for name, choice, mod in layers:
            if not is_float(choice.w_bits) or choice.prune > 0:
                st = (stats or {}).get(name)
                if name in reached and self.needs and not is_embedding(mod):
                    # sequential: the inputs the layer gets from the model compressed up to it
                    seen = layer_inputs(out, mod, batches)
                    st = collect_stats(mod, [(x, None) for x in seen], [""], self.needs)[""]
                res = self.quantize_layer(name, mod, choice, st)
                if results is not None:
                    results[name] = res
                set_weight(mod, res.weight.to(mod.weight.dtype))
                if res.bias_delta is not None:
                    add_bias(mod, res.bias_delta)
            rng = None if is_embedding(mod) else input_range(act_ranges, name, choice)
            if rng is not None:
                mod.register_forward_pre_hook(ActFakeQuant(rng[0], rng[1], int(choice.a_bits)))
        if batches is not None:
            self.finalize(out, policy, batches)
        return out

    def finalize(self, model: torch.nn.Module, policy: Policy, batches: Iterable[Any]) -> None:
        """A model-level pass over the compressed ``model`` (in place) once every layer is set,
        e.g. BatchNorm re-estimation; called by :meth:`apply` when it gets ``batches``. None here."""


def require_stats(q: Quantizer, name: str, stats: LayerStats | None) -> LayerStats:
    """``stats``, or a ValueError naming the layer when they lack any of ``q.needs``."""
    missing = sorted(n for n in q.needs if stats is None or getattr(stats, n) is None)
    if missing:
        what = ", ".join(repr(n) for n in missing) + (" statistic" if len(missing) == 1 else " statistics")
        raise ValueError(f"quantizer {q.name!r} needs the {what} of layer {name!r} "
                         f"(collect_stats over calibration batches)")
    return stats  # type: ignore[return-value]


def add_bias(module: torch.nn.Module, delta: torch.Tensor) -> None:
    """``module.bias += delta``, creating a zero bias first when the layer has none."""
    with torch.no_grad():
        if getattr(module, "bias", None) is None:
            module.bias = torch.nn.Parameter(torch.zeros_like(delta, dtype=module.weight.dtype))
        module.bias.add_(delta.to(module.bias.dtype))


def input_rows(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer input as ``[rows, K]``, K matching :func:`autocomp.modules.weight_of`'s flattened
    columns: a linear layer's features, a convolution's unfolded ``in*kh*kw`` patches."""
    if isinstance(module, torch.nn.Conv2d):
        cols = torch.nn.functional.unfold(x, module.kernel_size, dilation=module.dilation,
                                          padding=module.padding, stride=module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if isinstance(module, torch.nn.Conv1d):
        cols = torch.nn.functional.unfold(x.unsqueeze(-1), (module.kernel_size[0], 1),
                                          dilation=(module.dilation[0], 1),
                                          padding=(module.padding[0], 0), stride=(module.stride[0], 1))
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def collect_stats(model: torch.nn.Module, batches: Iterable[Any], names: Iterable[str],
                  needs: Iterable[str]) -> dict[str, LayerStats]:
    """One pass of the float ``model`` over calibration ``batches``: per named layer, the
    statistics in ``needs`` (see :data:`STATS`). Embeddings are skipped (their inputs are ids).

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> s = collect_stats(m, [(torch.ones(5, 3), None)], ["0"], ["hessian", "mean"])
        >>> s["0"].rows, s["0"].hessian.tolist()[0], s["0"].mean.tolist()
        (5, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    """
    needs = set(needs)
    bad = needs - set(STATS)
    if bad:
        raise ValueError(f"unknown statistics {sorted(bad)}: choose from {', '.join(STATS)}")
    mods = dict(model.named_modules())
    wanted = [n for n in names if n in mods and not is_embedding(mods[n])]
    out = {n: LayerStats() for n in wanted}
    if not needs or not wanted:
        return out

    def accumulate(n: str):
        mod, st = mods[n], out[n]

        def add(x: torch.Tensor) -> None:
            rows = input_rows(mod, x.detach().float()).cpu()
            if rows.shape[0] == 0:
                return
            k = rows.shape[0]
            tot = st.rows + k
            # running means: each batch weighs by its rows, so batch sizes may differ
            if "hessian" in needs:
                h = rows.t() @ rows / k
                st.hessian = h if st.hessian is None else st.hessian * (st.rows / tot) + h * (k / tot)
            if "mean" in needs:
                m = rows.mean(dim=0)
                st.mean = m if st.mean is None else st.mean * (st.rows / tot) + m * (k / tot)
            if "absmean" in needs:
                a = rows.abs().mean(dim=0)
                st.absmean = a if st.absmean is None else st.absmean * (st.rows / tot) + a * (k / tot)
            st.rows = tot
        return add

    adders = {n: accumulate(n) for n in wanted}
    with inspecting(model):
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            with capture_inputs(model, wanted, transform=None) as seen:
                call_model(model, inputs)
            for n, xs in seen.items():
                for x in xs:
                    adders[n](x)
    return out
