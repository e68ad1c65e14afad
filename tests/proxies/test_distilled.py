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
