"""The statistics evolved proxies are built from, per layer and per (layer, choice).

Layer primitives (one value per layer): the Hessian trace and top eigenvalue, the Fisher
information, SNIP and SynFlow saliency and the gradient norm (the layer scores of the
hand-designed proxies), the weight
count, its squared norm and largest magnitude, and the input activation's range and mean square.
Choice primitives (one value per layer and choice): the weight compression error
``||C(W) - W||^2`` (``perturb``), HAWQ's Omega with the activation term (``hawq``), the
measured loss increase of the choice alone (``loss``), and the choice's own weight bits,
activation bits and kept fraction.

The scored ones come from registered proxies (:data:`SOURCES`), so a bench on Ray
(``score_on_ray`` per source) and an evolved proxy in one process compute the same numbers.

Example:
    >>> from autocomp.proxies.evolved.primitives import Primitives, compute_primitives
    >>> prims = compute_primitives(wl, layers, space)                  # doctest: +SKIP
    >>> Primitives.from_dict(prims.to_dict()) == prims                 # doctest: +SKIP
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from autocomp.sensitivity import Sensitivity
from autocomp.values import check_version

PRIMITIVES_VERSION = 1

# primitive -> (source proxy, "layer" (its layer scores) or "omega" (its per-choice sensitivity))
SOURCES: dict[str, tuple[str, str]] = {
    "hessian": ("hessian_trace", "layer"),
    "hawq": ("hessian_trace", "omega"),
    "fisher": ("fisher", "layer"),
    "snip": ("snip", "layer"),
    "synflow": ("synflow", "layer"),
    "grad_norm": ("grad_norm", "layer"),
    "perturb": ("quant_mse", "omega"),
    "eig": ("hessian_eig", "layer"),
    "loss": ("loss_delta", "omega"),     # the measured loss increase of each choice alone
}
# Measured from the float model directly (cheap: one calibration pass).
LOCAL = ("numel", "w_sq", "w_absmax", "act_range", "act_sq")
# Properties of the choice itself.
CHOICE = ("w_bits", "a_bits", "keep")
# Options that keep the Hessian source to seconds on small models (as the audit does).
SOURCE_OPTIONS: dict[str, dict[str, Any]] = {"hessian_trace": {"max_probes": 16, "min_probes": 8, "tol": 1e-2},
                                             "hessian_eig": {"max_iter": 20, "tol": 1e-2}}

NAMES: tuple[str, ...] = (*SOURCES, *LOCAL, *CHOICE)


def sources_for(names: Sequence[str]) -> list[str]:
    """The source proxies the primitives ``names`` need, in a fixed order.

    Example:
        >>> sources_for(["hawq", "numel", "hessian", "perturb"])
        ['hessian_trace', 'quant_mse']
    """
    return sorted({SOURCES[n][0] for n in names if n in SOURCES})


@dataclass(frozen=True)
class Primitives:
    """``layer[prim][layer]`` and ``choice[prim][layer][choice key]`` values (the scored and
    measured ones; the choice's own properties come from the space when they are used)."""

    layer: dict[str, dict[str, float]] = field(default_factory=dict)
    choice: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    version: int = PRIMITIVES_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "layer": self.layer, "choice": self.choice}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Primitives":
        check_version("Primitives", d, PRIMITIVES_VERSION)
        return cls({p: {k: float(v) for k, v in vals.items()} for p, vals in d["layer"].items()},
                   {p: {l: {k: float(v) for k, v in cs.items()} for l, cs in vals.items()}
                    for p, vals in d["choice"].items()})

    @property
    def names(self) -> list[str]:
        return sorted({*self.layer, *self.choice, *CHOICE})


def from_sources(sens: Mapping[str, Sensitivity], local: Mapping[str, Mapping[str, float]],
                 names: Sequence[str] = NAMES) -> Primitives:
    """The primitives ``names`` from the source proxies' sensitivities and the local statistics."""
    layer: dict[str, dict[str, float]] = {}
    choice: dict[str, dict[str, dict[str, float]]] = {}
    for n in names:
        if n in SOURCES:
            src, kind = SOURCES[n]
            s = sens[src]
            if kind == "layer":
                layer[n] = {k: float(v) for k, v in s.layer_scores.items()}
            else:
                choice[n] = {l: {k: float(v) for k, v in cs.items()} for l, cs in s.omega.items()}
        elif n in LOCAL:
            layer[n] = {k: float(v) for k, v in local[n].items()}
    return Primitives(layer, choice)


def local_primitives(model, layers: Sequence, calib) -> dict[str, dict[str, float]]:
    """Weight count, squared norm and largest magnitude; input range and mean square (0 for
    embeddings, whose inputs are ids)."""
    from autocomp.calibrate import activation_stats
    from autocomp.modules import is_embedding, weight_of

    mods = dict(model.named_modules())
    names = [l.name for l in layers]
    out: dict[str, dict[str, float]] = {k: {} for k in LOCAL}
    acts = activation_stats(model, [n for n in names if not is_embedding(mods[n])], calib)
    for n in names:
        w = weight_of(mods[n]).detach().float()
        out["numel"][n] = float(w.numel())
        out["w_sq"][n] = float((w ** 2).sum())
        out["w_absmax"][n] = float(w.abs().max()) if w.numel() else 0.0
        lo, hi, sample = acts.get(n, (0.0, 0.0, None))
        out["act_range"][n] = float(hi - lo)
        out["act_sq"][n] = float((sample.float() ** 2).mean()) if sample is not None and sample.numel() else 0.0
    return out


Scorer = Callable[[str, dict], Sensitivity]


def compute_primitives(workload, layers: Sequence, space, names: Sequence[str] = NAMES,
                       scorer: Scorer | None = None) -> Primitives:
    """The primitives ``names`` of ``workload``'s model over ``space``.

    Args:
        scorer: ``scorer(proxy, options) -> Sensitivity`` for the sources (default: in this
            process; the bench passes one that scores on Ray).
    """
    from autocomp.proxies._base import get_proxy

    def here(proxy: str, options: dict) -> Sensitivity:
        return get_proxy(proxy, **options).score(workload, layers, space)

    scorer = scorer or here
    sens = {src: scorer(src, dict(SOURCE_OPTIONS.get(src, {}))) for src in sources_for(names)}
    local = local_primitives(workload.model(), layers, workload.calib) if set(names) & set(LOCAL) else {}
    return from_sources(sens, local, names)
