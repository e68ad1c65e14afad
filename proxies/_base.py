"""The proxy contract: ``Proxy.score(workload, layers, space) -> Sensitivity``.

A sensitivity is per layer per choice: the predicted loss increase when that layer alone takes
that choice (HAWQ-V2's Omega = Tr(H)/n * ||Q(W) - W||^2 is the model: a layer score times the
choice's perturbation). Proxies are pure: no database, no Ray inside.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from autocomp.errors import AutocompError

SENSITIVITY_VERSION = 1


@dataclass(frozen=True)
class Sensitivity:
    """``omega[layer][choice_key]``: predicted degradation; ``layer_scores``: the layer factor."""

    proxy: str
    omega: dict[str, dict[str, float]]
    layer_scores: dict[str, float] = field(default_factory=dict)
    version: int = SENSITIVITY_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "proxy": self.proxy, "omega": self.omega, "layer_scores": self.layer_scores}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Sensitivity":
        return cls(proxy=d["proxy"], omega={k: dict(v) for k, v in d["omega"].items()},
                   layer_scores=dict(d.get("layer_scores", {})))

    def of(self, layer: str, choice_key: str) -> float:
        return float(self.omega[layer][choice_key])

    def predict(self, policy) -> float:
        """Additive prediction of the policy's degradation (sum of per-layer omegas)."""
        return sum(self.omega[n][c.key] for n, c in policy.layers if n in self.omega)


class Proxy:
    """Base class. Subclasses set ``name`` and implement :meth:`score`."""

    name: str = ""

    def __init__(self, **options: Any):
        self.options = options

    def score(self, workload, layers: Sequence, space) -> Sensitivity:  # pragma: no cover - abstract
        raise NotImplementedError


_REGISTRY: dict[str, str | Callable[..., Proxy]] = {
    "fisher": "autocomp.proxies.zero_cost:FisherProxy",
    "quant_mse": "autocomp.proxies.zero_cost:QuantMSEProxy",
    "loss_delta": "autocomp.proxies.measured:LossDeltaProxy",
    "hessian_trace": "autocomp.proxies.hessian:HessianTraceProxy",
    "hessian_eig": "autocomp.proxies.hessian:HessianEigProxy",
    "lrp": "autocomp.proxies.lrp:LRPProxy",
    "snip": "autocomp.proxies.saliency:SnipProxy",
    "synflow": "autocomp.proxies.saliency:SynflowProxy",
    "grad_norm": "autocomp.proxies.saliency:GradNormProxy",
}


def register(name: str, factory: str | Callable[..., Proxy]) -> None:
    """Register a proxy under ``name`` (a class, or ``"module:Class"`` imported lazily)."""
    _REGISTRY[name] = factory


def list_proxies() -> list[str]:
    return sorted(_REGISTRY)


def get_proxy(name: str, **options: Any) -> Proxy:
    """Instantiate a registered proxy; unknown names raise a one-line :class:`AutocompError`."""
    if name.startswith("evolved:") and "evolved" in _REGISTRY:
        return _resolve(_REGISTRY["evolved"])(expression=name.split(":", 1)[1], **options)
    if name not in _REGISTRY:
        raise AutocompError(f"unknown proxy {name!r}: choose from {', '.join(list_proxies())}")
    return _resolve(_REGISTRY[name])(**options)


def _resolve(f: str | Callable[..., Proxy]) -> Callable[..., Proxy]:
    if isinstance(f, str):
        mod, _, attr = f.partition(":")
        return getattr(importlib.import_module(mod), attr)
    return f
