"""Zero-cost scores against direct computations (the proxy contract: tests/proxies/test_split.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from autocomp.errors import AutocompError
from autocomp.proxies import get_proxy, list_proxies


def test_registry_names_every_proxy_of_the_issue():
    assert {"hessian_trace", "hessian_eig", "lrp", "fisher", "snip", "synflow", "grad_norm", "quant_mse",
            "loss_delta"} <= set(list_proxies())
    with pytest.raises(AutocompError, match="unknown proxy 'nope'"):
        get_proxy("nope")


def test_snip_and_grad_norm_equal_direct_autograd(digits):
    from autocomp.proxies.saliency import gradient_stats

    model = digits.model()
    names = ["features.0", "classifier.5"]
    snip, gn = gradient_stats(digits, names, chunk=10_000)   # one chunk per calibration batch
    mods = dict(model.named_modules())
    exp_s, exp_g = {n: 0.0 for n in names}, {n: 0.0 for n in names}
    for x, y in digits.calib:
        ws = [mods[n].weight for n in names]
        gs = torch.autograd.grad(digits.loss(model(x), y), ws)
        for n, w, g in zip(names, ws, gs):
            exp_s[n] += float((g * w).abs().sum()) / len(digits.calib)
            exp_g[n] += float(g.norm()) / len(digits.calib)
        model.zero_grad(set_to_none=True)
    for n in names:
        assert snip[n] == pytest.approx(exp_s[n], rel=1e-5)
        assert gn[n] == pytest.approx(exp_g[n], rel=1e-5)


def test_synflow_conserves_flow_in_a_bias_free_relu_net():
    # SynFlow's conservation law: in a bias-free positive-path network every layer's score
    # sum(dR/dW * W) equals R itself.
    from autocomp.proxies.saliency import synflow_scores

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 4, bias=False), nn.ReLU(),
                      nn.Linear(4, 3, bias=False))
    s = synflow_scores(m, torch.zeros(2, 5), ["0", "2", "4"])
    r = float((m[4].weight.double().abs() @ m[2].weight.double().abs() @ m[0].weight.double().abs()).sum())
    for n in ("0", "2", "4"):
        assert s[n] == pytest.approx(r, rel=1e-9)
