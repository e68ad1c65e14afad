"""Within-band rank correlation: differs from the global figure, and ``--proxy auto`` ranks by it."""
from __future__ import annotations

import random

import pytest

from autocomp.audit import band_mates, best_proxy, check_bands, rank_correlations
from autocomp.bands import band_kendall, band_spearman, cost_bands, kendall, spearman
from autocomp.errors import AutocompError


def _size_only_case(seed: int = 0):
    """Ten bands of six policies: the drop falls with cost across bands and is random inside one;
    ``size`` predicts by cost alone (and noise), ``order`` knows the in-band order but is noisy
    across bands."""
    rng = random.Random(seed)
    costs, drop, size, order = [], [], [], []
    for b in range(10):
        base = 10.0 * (1.5 ** b)
        inside = [rng.random() for _ in range(6)]
        shift = 3.0 * rng.random()          # a band-wide offset: scrambles the order across bands
        for j, u in enumerate(inside):
            costs.append(base * (1 + 0.004 * j))
            drop.append(100.0 / base + u)
            size.append(100.0 / base + 0.001 * rng.random())
            order.append(u + shift)
    return costs, drop, size, order


def test_global_high_but_within_band_near_zero():
    costs, drop, size, order = _size_only_case()
    glob, _ = rank_correlations(size, drop)
    band, nb, n = band_spearman(size, drop, costs, tol=0.05)
    assert glob > 0.8                       # big policies beat small ones: any cost proxy scores well
    assert abs(band) < 0.35 and nb == 10 and n == 60
    oband, _, _ = band_spearman(order, drop, costs, tol=0.05)
    assert oband > 0.99 > band               # the in-band ranking is what tells them apart


def test_auto_picks_by_the_within_band_figure():
    costs, drop, size, order = _size_only_case(1)
    rows = []
    for name, pred in (("size", size), ("order", order)):
        rho, tau = rank_correlations(pred, drop)
        rows.append({"proxy": name, "spearman": rho, "kendall": tau,
                     "band_spearman": band_spearman(pred, drop, costs, 0.05)[0]})
    assert rows[0]["spearman"] > rows[1]["spearman"]           # the global figure prefers size
    assert best_proxy(rows) == "order"
    # Without any populated band the global figure decides, as before.
    assert best_proxy([{**r, "band_spearman": None} for r in rows]) == "size"


def test_bands_and_spearman_edge_cases():
    assert cost_bands([3.0, 1.0, 1.04, 1.06], 0.05) == [[1, 2], [3], [0]]
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, float("nan"), 3], [1, 2, 3]) is None
    # two-policy bands carry no ranking; a constant drop neither
    assert band_spearman([1, 2, 3, 4], [1, 2, 2, 2], [1, 1, 9, 9], 0.05) == (None, 0, 0)
    with pytest.raises(AutocompError, match="--band-tol"):
        check_bands(0.0, 0, "size")
    with pytest.raises(AutocompError, match="unknown"):
        check_bands(0.05, 0, "weight")


def test_band_mates_keep_the_cost_and_differ(digits, digits_layers):
    from autocomp.budget import CostModel
    from autocomp.policy import Choice, Policy
    from autocomp.profile import model_param_count
    from autocomp.search_spaces import load_space

    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    names = [l.name for l in digits_layers]
    anchor = Policy.uniform(names, Choice(4, 8, 0.0))
    mates = band_mates(digits_layers, load_space("mixed_precision"), cm, anchor, 5, tol=0.05,
                       rng=random.Random(3))
    assert len(mates) >= 3 and len({m.id for m in mates} | {anchor.id}) == len(mates) + 1
    c0 = cm.cost("size", anchor)
    for m in mates:
        assert abs(cm.cost("size", m) - c0) <= 0.025 * c0 + 1e-9
        assert any(c.w_bits != 4 for _, c in m.layers)


def test_audit_with_band_mates_stores_the_within_band_figure(ray_session, sqlite_url):
    from autocomp.audit import AuditConfig, run_audit
    from autocomp.store import Store

    store = Store(sqlite_url)
    rows = run_audit(AuditConfig(model="digits", samples=3, band_mates=2, proxies=("quant_mse",), workers=2),
                     store, "banded")
    row = rows[0]
    assert row["samples"] > 3 and row["bands"] >= 1 and row["band_spearman"] is not None
    stored = store.load_audits(store.get_study("banded"))[0]
    assert stored["band_spearman"] == pytest.approx(row["band_spearman"])
    assert best_proxy(rows) == "quant_mse"


def test_kendall_is_tau_b_and_pools_over_bands_like_spearman():
    from scipy.stats import kendalltau

    rng = random.Random(3)
    for n in (3, 7, 30):
        a = [rng.randint(0, 4) for _ in range(n)]            # ties on both sides
        b = [rng.randint(0, 4) + 0.5 * x for x in a]
        ref = kendalltau(a, b).statistic
        got = kendall(a, b)
        assert (got is None) if not ref == ref else got == pytest.approx(ref)
    assert kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall([1, 1, 1], [1, 2, 3]) is None and kendall([1, float("inf")], [1, 2]) is None
    costs, drop, size, order = _size_only_case(2)
    tau, nb, n = band_kendall(order, drop, costs, 0.05)
    assert (nb, n) == band_spearman(order, drop, costs, 0.05)[1:] == (10, 60)
    bands = [b for b in cost_bands(costs, 0.05)]
    manual = sum(kendall([order[i] for i in b], [drop[i] for i in b]) * len(b) for b in bands) / 60
    assert tau == pytest.approx(manual) and tau > 0.99
    assert abs(band_kendall(size, drop, costs, 0.05)[0]) < 0.35


def test_held_out_reports_spearman_and_kendall_on_the_held_out_bands_only():
    import numpy as np
    from types import SimpleNamespace

    from autocomp.evolution import held_out

    costs, drop, size, order = _size_only_case(4)
    bench = SimpleNamespace(drops=drop, costs=costs, band_tol=0.05)
    mask = np.array([i < 30 for i in range(60)])             # first five bands train, last five held out
    out = held_out(order, bench, mask)
    test = [i for i in range(60) if not mask[i]]
    assert (out["bands"], out["policies"]) == (5, 30)
    assert out["band_kendall"] == pytest.approx(band_kendall([order[i] for i in test], [drop[i] for i in test],
                                                             [costs[i] for i in test], 0.05)[0])
    assert out["kendall"] == pytest.approx(kendall([order[i] for i in test], [drop[i] for i in test]))
    assert out["band_spearman"] > 0.99 and -1 <= out["kendall"] < out["band_kendall"]
