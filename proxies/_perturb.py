"""A choice's perturbation of a layer under the quantizer that will be used (``quantizer=SPEC``).

With ``rtn`` (the default) the proxies keep their historical path: ``dW = C(W) - W`` by
round-to-nearest and its squared norm ``||dW||^2``. With another quantizer (``gptq``, ``awq``,
``gptq+bias_correction``, ...), each (layer, choice) is quantized by that quantizer on the float
model, with the calibration statistics it needs (:func:`autocomp.quantizers.collect_stats`,
collected once per :class:`Perturber`, i.e. once per proxy part).

Error-correcting quantizers do not make ``||dW||^2`` smaller; they move the error into the
directions the layer's inputs do not excite (GPTQ) or away from salient channels (AWQ). The
isotropic model behind Omega = Tr(H)/n * ||dW||^2 is blind to exactly that, so under a
quantizer that uses input statistics the squared norm is the layer's output error on the
calibration inputs, in weight units:

    ||dW||^2_x = E||dW x + db||^2 / (Tr(Sigma) / K),    Sigma = E[x x^T]  (K input features)

(``db`` the quantizer's bias correction). It equals ``||dW||^2`` when the inputs are isotropic
(``Sigma = c I``, ``db = 0``), and it is what Omega becomes with the Kronecker-factored Hessian
``H_W ~ G (x) Sigma`` (K-FAC) instead of a multiple of the identity: Tr(H)/n * ||dW||^2_x. A
data-free quantizer's error is not shaped by the inputs, so it keeps ``||dW||^2``.

A space with a quantizer dimension (``w4a8@gptq`` next to ``w4a8``) has each (layer, choice)
quantized by the choice's own quantizer (:mod:`autocomp.quantizers.per_layer`), so the allocator
picks per layer what will be evaluated; as soon as one of them uses input statistics, every
choice is weighed by the inputs, so that the choices of a layer compare on one scale.

Example:
    >>> from autocomp.proxies._perturb import Perturber
    >>> p = Perturber("gptq", model, ["fc1", "fc2"], wl.calib)     # doctest: +SKIP
    >>> p.norms("fc1", mods["fc1"], choices["fc1"])                # doctest: +SKIP
    {'w4a32': 0.012, 'w8a32': 4.1e-05}
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from autocomp.errors import AutocompError
from autocomp.modules import is_embedding, weight_of
from autocomp.policy import Choice
from autocomp.quant import is_float
from autocomp.quantizers import LayerResult, LayerStats, Quantizer, collect_stats, get_quantizer
from autocomp.quantizers.per_layer import for_choices

DEFAULT = "rtn"


def build(spec: str) -> Quantizer:
    """The quantizer ``spec`` names (``gptq``, ``gptq(act_order=True)+bias_correction``).

    Raises:
        AutocompError: an unknown name or a malformed spec (one line).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AutocompError(f"quantizer must be a non-empty spec such as 'rtn' or 'gptq', got {spec!r}")
    return get_quantizer(spec.strip())


def check_spec(spec: str) -> None:
    """For an ``Options.__post_init__``: a bad spec fails when the proxy is built, not on a worker."""
    build(spec)


def is_default(spec: str, space=None) -> bool:
    """Whether ``spec`` is round-to-nearest (``rtn``, ``rtn()``) and ``space`` (when given) names
    no per-layer quantizer: the proxies' historical path."""
    if space is not None and space.quantizers():
        return False
    return spec.strip() == DEFAULT or build(spec).spec == DEFAULT


class Perturber:
    """Quantize single layers of ``model`` with one quantizer, statistics collected once.

    Args:
        spec: the quantizer spec.
        model: the float model (never modified).
        names: the layers this part will perturb (statistics are gathered for these only).
        batches: the calibration batches.
        weigh: whether :meth:`norms` will be asked for (the input moments that weigh the error
            are then collected too); a caller that only applies :meth:`result` passes False.
        choices: every choice that will be asked for; those naming a quantizer (``w4a8@gptq``)
            are quantized by it, ``spec`` quantizes the others.
    """

    def __init__(self, spec: str, model: torch.nn.Module, names: Sequence[str], batches: Iterable,
                 weigh: bool = True, choices: Iterable[Choice] = ()):
        self.quantizer = for_choices(build(spec), choices)
        # The input covariance weights the error whenever the quantizer shapes it by the inputs.
        self.weighted = weigh and bool(self.quantizer.needs)
        needs = set(self.quantizer.needs) | ({"hessian", "mean"} if self.weighted else set())
        self.stats: dict[str, LayerStats] = collect_stats(model, list(batches), names, needs) if needs else {}

    def result(self, name: str, module: torch.nn.Module, choice: Choice) -> LayerResult | None:
        """The quantizer's weight (and bias correction) for ``choice``; None when the layer stays float."""
        if is_float(choice.w_bits) and choice.prune <= 0:
            return None
        return self.quantizer.quantize_layer(name, module, choice, self.stats.get(name))

    def norms(self, name: str, module: torch.nn.Module, choices: Sequence[Choice]) -> dict[str, float]:
        """Per choice key: the squared perturbation (``||dW||^2_x`` when weighted, see the module doc)."""
        w = weight_of(module).detach().float()
        st = self.stats.get(name)
        out = {}
        for c in choices:
            res = self.result(name, module, c)
            if res is None:
                out[c.key] = 0.0
                continue
            dw = (res.weight.detach().float() - w).reshape(w.shape[0], -1)
            db = None if res.bias_delta is None else res.bias_delta.detach().float().reshape(-1)
            if self.weighted and st is not None and st.hessian is not None and not is_embedding(module):
                out[c.key] = output_error(dw, db, st)
            else:
                out[c.key] = float((dw ** 2).sum()) + (0.0 if db is None else float((db ** 2).sum()))
        return out


def output_error(dw: torch.Tensor, db: torch.Tensor | None, stats: LayerStats) -> float:
    """``E||dW x + db||^2 / (Tr(Sigma) / K)`` from the layer's input moments (see the module doc).

    Example:
        >>> import torch
        >>> st = LayerStats(rows=1, hessian=torch.eye(3) * 2, mean=torch.zeros(3))
        >>> output_error(torch.ones(2, 3), None, st)     # isotropic inputs: ||dW||^2
        6.0
    """
    h = stats.hessian.to(dw.device, torch.float64)
    d = dw.double()
    err = float(((d @ h) * d).sum())
    if db is not None:
        b = db.double()
        if stats.mean is not None:
            err += 2.0 * float(b @ (d @ stats.mean.to(dw.device, torch.float64)))
        err += float(b @ b)
    scale = float(torch.diagonal(h).sum()) / max(h.shape[0], 1)
    # Inputs that are identically zero: the weights do not matter, only a bias change does.
    return max(err / scale if scale > 0 else err, 0.0)


def perturbation_norms(spec: str, model: torch.nn.Module, layers: Sequence, choices: dict[str, list[Choice]],
                       batches: Iterable) -> dict[str, dict[str, float]]:
    """``norms[layer][choice key]`` for ``layers`` under quantizer ``spec`` (one statistics pass).

    Example:
        >>> norms = perturbation_norms("gptq", wl.model(), layers, space.choices(layers), wl.calib)  # doctest: +SKIP
    """
    names = [l.name for l in layers]
    p = Perturber(spec, model, names, batches, choices=[c for n in names for c in choices[n]])
    mods = dict(model.named_modules())
    return {n: p.norms(n, mods[n], choices[n]) for n in names}


#: suffix of a layer's per-token input sample among the activation statistics (see :func:`act_key`)
TOKEN_KEY = "#token"
_TOKEN_ROWS = 1024  # token rows kept per layer for the per-token activation error


def act_key(name: str, choice: Choice) -> str:
    """The key of the activation statistics ``(lo, hi, sample)`` that ``choice``'s input error is
    measured on: the layer's per-tensor sample, or its token rows for a per-token choice."""
    return name + TOKEN_KEY if choice.per_token else name


def token_stats(model: torch.nn.Module, layers, calib, choices: dict[str, list[Choice]],
                seed: int = 0) -> dict[str, tuple[float, float, torch.Tensor]]:
    """For each layer with a per-token choice, under :func:`act_key`: ``TOKEN_RANGE`` and a random
    sample of its input's token rows ``[rows, features]`` (a per-token error needs whole rows,
    which the per-tensor sample of scattered values does not keep).

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> st = token_stats(m, [type("L", (), {"name": "0"})], [(torch.ones(2, 3, 4), None)],
        ...                  {"0": [Choice(8, 8, act="token")]})
        >>> st["0#token"][2].shape
        torch.Size([6, 4])
    """
    from autocomp.modules import call_model, capture_inputs
    from autocomp.quant import TOKEN_RANGE

    names = [l.name for l in layers if any(c.per_token for c in choices.get(l.name, ()))]
    if not names:
        return {}
    g = torch.Generator().manual_seed(seed)
    per_call = _TOKEN_ROWS // max(len(calib), 1) + 1

    def rows(x: torch.Tensor) -> torch.Tensor:
        r = x.detach().float().reshape(-1, x.shape[-1])
        return r[torch.randperm(r.shape[0], generator=g)[:per_call]].cpu()

    model.eval()
    with capture_inputs(model, names, transform=rows) as seen, torch.no_grad():
        for x, _ in calib:
            call_model(model, x)
    return {n + TOKEN_KEY: (*TOKEN_RANGE, torch.cat(seen[n]) if seen[n] else torch.zeros(0, 1)) for n in names}
