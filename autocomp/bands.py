"""Cost bands: the ranking a proxy owes the allocator is among policies of about the same cost.

A sample spread from the mildest to the harshest policy rewards any proxy that merely knows big
policies beat small ones. :func:`cost_bands` cuts the policies, sorted by cost, into bands whose
costs lie within ``tol`` (relative) of the band's cheapest member; :func:`band_spearman` is the
Spearman correlation inside each band, pooled over the bands (weighted by band size) -- the
within-band figure the audit reports and ``--proxy auto`` and the proxy evolution rank by.

Example:
    >>> from autocomp.bands import band_spearman, cost_bands
    >>> cost_bands([1.0, 1.02, 2.0, 2.05, 2.08], tol=0.05)
    [[0, 1], [2, 3, 4]]
    >>> pred, drop = [1, 2, 3, 1, 2, 3], [1, 2, 3, 3, 2, 1]   # agree in band 1, disagree in band 2
    >>> band_spearman(pred, drop, [1, 1, 1, 5, 5, 5], tol=0.05)
    (0.0, 2, 6)
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MIN_BAND = 3   # two policies give a Spearman of +-1 whatever the proxy: no information


def cost_bands(costs: Sequence[float], tol: float = 0.05) -> list[list[int]]:
    """Indices of ``costs`` grouped into bands (cheapest first): each band holds the policies whose
    cost is at most ``(1 + tol)`` times the cheapest one of the band."""
    if tol < 0:
        raise ValueError(f"band tolerance must be non-negative, got {tol}")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    bands: list[list[int]] = []
    for i in order:
        if bands and costs[i] <= costs[bands[-1][0]] * (1.0 + tol) + 1e-12:
            bands[-1].append(i)
        else:
            bands.append([i])
    return bands


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv]


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho with average ranks; ``None`` when either side is constant or not finite.

    Example:
        >>> spearman([1, 2, 3], [3, 2, 1]), spearman([1, 1, 1], [1, 2, 3])
        (-1.0, None)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    return None if den == 0.0 else float((rx * ry).sum() / den)


def kendall(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties counted on either side); ``None`` when either side is constant or
    not finite.

    Example:
        >>> kendall([1, 2, 3, 4], [1, 3, 2, 4]), kendall([1, 1, 1], [1, 2, 3])
        (0.6666666666666666, None)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(x) != len(y) or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    nx, ny = float(np.count_nonzero(dx)), float(np.count_nonzero(dy))
    den = math.sqrt(nx * ny)
    return None if den == 0.0 else float((dx * dy).sum() / den)


def band_spearman(pred: Sequence[float], drop: Sequence[float], costs: Sequence[float],
                  tol: float = 0.05) -> tuple[float | None, int, int]:
    """Spearman of ``pred`` with ``drop`` inside each cost band, pooled (weighted by band size).

    Bands with fewer than :data:`MIN_BAND` policies, or where the measured drop is constant,
    carry no ranking and are left out; a constant prediction inside a band counts as 0 (it ranks
    nothing). Returns ``(rho, bands used, policies in them)``; ``rho`` is ``None`` when no band
    qualifies.
    """
    return band_correlation(pred, drop, costs, tol, spearman)


def band_kendall(pred: Sequence[float], drop: Sequence[float], costs: Sequence[float],
                 tol: float = 0.05) -> tuple[float | None, int, int]:
    """:func:`band_spearman` with Kendall's tau-b inside each band (same bands, same pooling)."""
    return band_correlation(pred, drop, costs, tol, kendall)


def band_correlation(pred: Sequence[float], drop: Sequence[float], costs: Sequence[float], tol: float,
                     corr) -> tuple[float | None, int, int]:
    """``corr`` (a rank correlation returning ``None`` on constant input) inside each cost band,
    pooled as :func:`band_spearman` describes."""
    if not len(pred) == len(drop) == len(costs):
        raise ValueError("pred, drop and costs must have the same length")
    total, weight, used, n = 0.0, 0, 0, 0
    for band in cost_bands(costs, tol):
        if len(band) < MIN_BAND:
            continue
        d = [drop[i] for i in band]
        if len(set(d)) < 2:
            continue
        rho = corr([pred[i] for i in band], d)
        if rho is None and not np.isfinite(np.asarray([pred[i] for i in band], dtype=float)).all():
            continue
        total += (rho or 0.0) * len(band)
        weight += len(band)
        used += 1
        n += len(band)
    return (total / weight if weight else None), used, n
