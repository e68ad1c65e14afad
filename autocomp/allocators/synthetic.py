"""Synthetic allocation instances of any size, for benchmarks and solver tests.

Example:
    >>> from autocomp.allocators.synthetic import instance
    >>> layers, sens, space, cm, budget = instance(4)
    >>> len(layers), len(space.choices_for(layers[0], 4))
    (4, 80)
"""
from __future__ import annotations

import numpy as np

from autocomp.budget import Budget, Constraint, CostModel
from autocomp.profile import LayerInfo
from autocomp.search_spaces import SearchSpace
from autocomp.sensitivity import Sensitivity

W_BITS = (1, 1.58, 2, 3, 4, 6, 8, 16)
A_BITS = (4, 8)
PRUNE = (0.0, 0.25, 0.5, 0.75, 0.9)


def instance(n_layers: int = 200, seed: int = 0):
    """A synthetic network: HAWQ-like omegas (layer factor x quantization noise of each choice,
    plus a pruning term) with 10 % multiplicative noise, and a latency table in which low bits
    only pay off on large layers."""
    rng = np.random.default_rng(seed)
    space = SearchSpace("bench", w_bits=W_BITS, a_bits=A_BITS, prune=PRUNE)
    layers, omega, lat = [], {}, {}
    for i in range(n_layers):
        cin, cout, k = int(rng.choice([64, 128, 256, 512])), int(rng.choice([64, 128, 256, 512])), int(rng.choice([1, 3]))
        hw = int(rng.choice([7, 14, 28, 56]))
        params = cin * cout * k * k
        l = LayerInfo(f"layer{i}", "Conv2d", (cout, cin, k, k), params, 0, params * hw * hw,
                      (cin, hw, hw), (cout, hw, hw), i)
        layers.append(l)
        s_w, s_a, s_p = rng.lognormal(0, 1.0, 3)
        omega[l.name], lat[l.name] = {}, {}
        for c in space.choices_for(l, n_layers):
            w = 0.6 if c.w_bits == 1.58 else float(c.w_bits)
            o = s_w * 4.0 ** (-w) + s_a * 4.0 ** (-c.a_bits) * 0.3 + s_p * c.prune ** 2 * 0.05
            omega[l.name][c.key] = float(o * rng.lognormal(0, 0.1))
            eff = l.macs * (1 - 0.6 * c.prune) * max(float(c.w_bits), 4.0) * c.a_bits / 64.0
            lat[l.name][c.key] = 2e-6 + eff * 1e-12
        lat[l.name]["w32a32"] = 2e-6 + l.macs * 16 * 1e-12
    cm = CostModel(layers, latency_table=lat)
    sens = Sensitivity("synthetic", omega)
    budget = Budget((Constraint("size", 0.12, True, "size<=12%"), Constraint("bitops", 0.04, True, "bitops<=4%"),
                     Constraint("latency", 0.35, True, "latency<=35%")))
    return layers, sens, space, cm, budget
