"""The allocator's input: a sensitivity per layer per choice, as a proxy predicts it.

``omega[layer][choice_key]`` is the predicted degradation when that layer alone takes that choice
(HAWQ-V2's Omega = Tr(H)/n * ||Q(W) - W||^2 is the model: a layer factor times the choice's
perturbation); ``layer_scores`` holds the layer factor. A value: no proxy, no solver here.

Example:
    >>> from autocomp.sensitivity import Sensitivity
    >>> s = Sensitivity("mine", {"fc": {"w4a8": 0.5, "w8a8": 0.1}}, {"fc": 2.0})
    >>> s.of("fc", "w4a8")
    0.5
    >>> Sensitivity.from_dict(s.to_dict()) == s
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from autocomp.values import check_version

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
        """Rebuild from :meth:`to_dict`; another ``version`` raises a one-line error."""
        check_version("Sensitivity", d, SENSITIVITY_VERSION)
        return cls(proxy=d["proxy"], omega={k: dict(v) for k, v in d["omega"].items()},
                   layer_scores=dict(d.get("layer_scores", {})))

    def of(self, layer: str, choice_key: str) -> float:
        return float(self.omega[layer][choice_key])

    def predict(self, policy) -> float:
        """Additive prediction of the policy's degradation (sum of per-layer omegas)."""
        return sum(self.omega[n][c.key] for n, c in policy.layers if n in self.omega)
