"""ZeroQ distilled calibration data."""
from __future__ import annotations

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.proxies.distilled import distill_batches, with_data


def _bn_gap(model, x):
    gaps = []
    hooks = [m.register_forward_pre_hook(lambda m, a: gaps.append(
        float((a[0].mean((0, 2, 3)) - m.running_mean).norm()))) for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sum(gaps)


def test_distilled_batches_match_batchnorm_statistics(digits):
    model = digits.model()
    batches = distill_batches(model, digits.sample_input(), batches=1, batch_size=32, steps=60, seed=0)
    x, y = batches[0]
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    noise = torch.randn_like(x, generator=None)
    assert _bn_gap(model, x) < 0.5 * _bn_gap(model, noise)
    # the proxies run on the distilled data alone
    wl = with_data(digits, "distilled", steps=20)
    assert len(wl.calib) == len(digits.calib) and wl.calib[0][0] is not digits.calib[0][0]


def test_distilled_data_needs_batchnorm_and_known_names():
    from autocomp.workload import load_workload

    with pytest.raises(AutocompError, match="needs BatchNorm"):
        with_data(load_workload("digits-vit"), "distilled")
    with pytest.raises(AutocompError, match="unknown --data"):
        with_data(load_workload("digits"), "imagenet")


def test_proxies_on_ray_use_the_distilled_batches(ray_session, tmp_path, digits_layers):
    from autocomp.proxies import get_proxy
    from autocomp.search_spaces import load_space
    from autocomp.workers.proxy_tasks import score_on_ray
    from autocomp.workload import load_workload

    (tmp_path / "small.py").write_text(
        "from autocomp.workloads.digits import digits\n"
        "def make():\n"
        "    wl = digits()\n"
        "    wl.calib = [(wl.calib[0][0][:32], wl.calib[0][1][:32])]\n"
        "    return wl\n")
    spec = f"{tmp_path / 'small.py'}:make"
    space = load_space("w4a8")
    on_ray = score_on_ray(spec, "lrp", digits_layers, space, workers=2, data="distilled")
    wl = load_workload(spec)
    local = get_proxy("lrp").score(with_data(wl, "distilled"), digits_layers, space)   # the cached batches
    real = get_proxy("lrp").score(wl, digits_layers, space)
    for n in on_ray.layer_scores:
        assert on_ray.layer_scores[n] == pytest.approx(local.layer_scores[n], rel=1e-4)
    assert on_ray.layer_scores != pytest.approx(real.layer_scores, rel=1e-3)
