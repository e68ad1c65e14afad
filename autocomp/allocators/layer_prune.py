"""Layer-adaptive magnitude pruning by dynamic programming ("Efficient Joint Optimization of
Layer-Adaptive Weight Pruning in Deep Neural Networks").

1. Measure each layer's *output-distortion curve*: the mean squared change of the model's output
   on calibration inputs when that layer alone is pruned to each ratio.
2. Rely on additivity - the distortion of pruning several layers is close to the sum of their
   single-layer distortions - so the joint problem is a knapsack over layers.
3. Solve for one ratio per layer minimising the summed distortion under a total sparsity target,
   exactly, with the same Pareto-set DP the ``dp`` allocator uses (linear in the layers).

:func:`additivity` measures how well step 2 holds on a workload.

Example:
    >>> from autocomp.allocators.layer_prune import allocate_pruning
    >>> import numpy as np
    >>> from autocomp.profile import LayerInfo
    >>> ls = [LayerInfo(n, "Linear", (10, 10), 100, 0, 100, (10,), (10,), i) for i, n in enumerate("ab")]
    >>> curves = {"a": np.array([0.0, 1.0, 5.0]), "b": np.array([0.0, 0.1, 0.3])}
    >>> allocate_pruning(ls, curves, (0.0, 0.5, 0.9), target=0.45)
    {'a': 0.0, 'b': 0.9}
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from autocomp.allocators.dp import pareto_dp
from autocomp.errors import AutocompError
from autocomp.modules import call_model, set_weight, weight_of
from autocomp.policy import Choice, Policy
from autocomp.profile import LayerInfo
from autocomp.quant import FLOAT_BITS, compress_weight

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _outputs(model: torch.nn.Module, inputs: Sequence) -> list[torch.Tensor]:
    with torch.no_grad():
        return [call_model(model, x).detach().float() for x in inputs]


def _distortion(model: torch.nn.Module, inputs: Sequence, ref: list[torch.Tensor]) -> float:
    out = _outputs(model, inputs)
    num = sum(float(((o - r) ** 2).sum()) for o, r in zip(out, ref))
    return num / max(sum(r.shape[0] for r in ref), 1)


class _Pruned:
    """Context manager pruning some layers of ``model`` in place and restoring them on exit."""

    def __init__(self, model: torch.nn.Module, ratios: Mapping[str, float]):
        self.mods = dict(model.named_modules())
        self.ratios = {n: r for n, r in ratios.items() if r > 0}
        self.saved: dict[str, torch.Tensor] = {}

    def __enter__(self):
        for n, r in self.ratios.items():
            mod = self.mods[n]
            self.saved[n] = mod.weight.detach().clone()
            set_weight(mod, compress_weight(weight_of(mod).detach(), FLOAT_BITS, r))
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for n, w in self.saved.items():
                self.mods[n].weight.copy_(w)


def _inputs(workload, batches: int | None) -> list:
    return [x for x, _ in workload.calib][:batches]


def distortion_curves(workload, layers: Sequence[LayerInfo], ratios: Sequence[float] = DEFAULT_RATIOS,
                      model: torch.nn.Module | None = None, batches: int | None = None) -> dict[str, np.ndarray]:
    """Per layer, the output distortion (mean squared output change per sample on the first
    ``batches`` calibration batches, default all) of pruning that layer alone to each ratio."""
    model = model if model is not None else workload.model()
    model.eval()
    inputs = _inputs(workload, batches)
    ref = _outputs(model, inputs)
    curves = {}
    for l in layers:
        row = []
        for r in ratios:
            with _Pruned(model, {l.name: r}):
                row.append(_distortion(model, inputs, ref) if r > 0 else 0.0)
        curves[l.name] = np.array(row)
    return curves


def joint_distortion(workload, ratios: Mapping[str, float], model: torch.nn.Module | None = None,
                     batches: int | None = None) -> float:
    """The measured output distortion of pruning every layer of ``ratios`` at once."""
    model = model if model is not None else workload.model()
    model.eval()
    inputs = _inputs(workload, batches)
    ref = _outputs(model, inputs)
    with _Pruned(model, ratios):
        return _distortion(model, inputs, ref)


def allocate_pruning(layers: Sequence[LayerInfo], curves: Mapping[str, np.ndarray], ratios: Sequence[float],
                     target: float) -> dict[str, float]:
    """Per-layer ratios minimising the summed distortion with at least ``target`` of all the
    layers' weights pruned (exact: Pareto-set DP over kept weights).

    Raises:
        AutocompError: ``target`` exceeds what the largest ratio on every layer reaches.
    """
    total = sum(l.params for l in layers)
    cap = (1.0 - target) * total  # weights that may stay
    keep = [np.array([l.params * (1.0 - r) for r in ratios]) for l in layers]
    front = pareto_dp([np.asarray(curves[l.name], dtype=float) for l in layers], keep, cap)
    sol = front.best(cap)
    if sol is None:
        raise AutocompError(f"sparsity target {target:.0%} is above the largest reachable ({max(ratios):.0%} everywhere)")
    return {l.name: float(ratios[k]) for l, k in zip(layers, sol.picks)}


def pruning_policy(layers: Sequence[LayerInfo], ratios: Mapping[str, float], w_bits: float = FLOAT_BITS,
                   a_bits: int = FLOAT_BITS) -> Policy:
    """The allocation as a policy (float weights unless ``w_bits`` says otherwise)."""
    return Policy.from_choices([(l.name, Choice(w_bits, a_bits, ratios.get(l.name, 0.0))) for l in layers])


def additivity(workload, layers: Sequence[LayerInfo], curves: Mapping[str, np.ndarray],
               ratios: Sequence[float] = DEFAULT_RATIOS, samples: int = 20, seed: int = 0,
               model: torch.nn.Module | None = None, batches: int | None = None) -> dict[str, float]:
    """How well the sum of single-layer distortions predicts the measured joint distortion, over
    ``samples`` random per-layer ratio assignments (``curves`` measured on the same batches).

    Returns:
        ``pearson`` and ``spearman`` correlations of predicted against measured, and
        ``median_rel_err`` (|measured - predicted| / measured).
    """
    model = model if model is not None else workload.model()
    rng = np.random.default_rng(seed)
    pred, meas = [], []
    for _ in range(samples):
        # Vary the overall sparsity too, so the check spans light to heavy pruning.
        hi = rng.integers(1, len(ratios))
        pick = {l.name: int(rng.integers(0, hi + 1)) for l in layers}
        pred.append(sum(float(curves[n][k]) for n, k in pick.items()))
        meas.append(joint_distortion(workload, {n: ratios[k] for n, k in pick.items()}, model, batches))
    p, m = np.array(pred), np.array(meas)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731 - ties are rare for real distortions
    return {
        "pearson": float(np.corrcoef(p, m)[0, 1]),
        "spearman": float(np.corrcoef(rank(p), rank(m))[0, 1]),
        "median_rel_err": float(np.median(np.abs(m - p) / np.maximum(m, 1e-12))),
        "samples": float(samples),
    }
