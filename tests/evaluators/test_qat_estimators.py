"""Each QAT estimator's backward against its closed form, on small tensors (autocomp.evaluators._estimators)."""
from __future__ import annotations

import math

import pytest
import torch

from autocomp.evaluators._estimators import Estimator, Grid, fake_quant, lsq_gscale

U = torch.tensor([-3.3, -1.7, -0.9, -0.25, 0.1, 0.49, 0.6, 1.2, 1.5, 2.2])


def _grads(u: torch.Tensor, grid: Grid, est: Estimator, s: float = 1.0, z: float = 0.0):
    x = (u * s).clone().requires_grad_(True)
    step = torch.tensor(s, requires_grad=True)
    y = fake_quant(x, step, grid, est, torch.tensor(z) if z else None, gscale=0.5)
    y.sum().backward()
    return y.detach(), x.grad, step.grad


def test_ste_is_identity_inside_the_grid_and_lsq_for_the_step():
    grid = Grid(-2, 1)
    y, gx, gs = _grads(U, grid, Estimator("ste"), s=0.5)
    q = U.round().clamp(-2, 1)
    assert torch.allclose(y, q * 0.5)
    inside = ((U >= -2) & (U <= 1)).float()
    assert torch.equal(gx, inside)
    # LSQ: dy/ds = Q(u) - u inside, the clamped code outside; times the gradient scale
    assert gs.item() == pytest.approx(0.5 * float(((q - U) * inside + q * (1 - inside)).sum()), rel=1e-5)


def test_reste_backward_is_the_clamped_power_slope():
    o, m = 3.0, 2.5
    grid = Grid(-4, 3)
    _, gx, _ = _grads(U, grid, Estimator("reste", power=o, clamp=m))
    e = 1 - 2 * (U - U.round()).abs()                  # distance to the rounding threshold, normalized
    expect = torch.clamp((1 / o) * e.clamp_min(1e-12) ** (1 / o - 1), max=m) * ((U >= -4) & (U <= 3))
    assert torch.allclose(gx, expect, rtol=1e-5)
    # binary: the slope of sign(u)|u|^(1/o), no clip for weights
    _, gb, _ = _grads(U, Grid(binary=True), Estimator("reste", power=o, clamp=m, clip=False))
    assert torch.allclose(gb, torch.clamp((1 / o) * U.abs() ** (1 / o - 1), max=m), rtol=1e-5)
    # power 1 is the STE
    _, g1, _ = _grads(U, grid, Estimator("reste", power=1.0))
    assert torch.equal(g1, _grads(U, grid, Estimator("ste"))[1])


def test_biper_is_a_square_wave_with_a_cosine_backward():
    f = 1.3
    y, gx, _ = _grads(U, Grid(binary=True), Estimator("biper", freq=f, clip=False))
    assert torch.equal(y, torch.where(torch.sin(f * U) >= 0, 1.0, -1.0))
    assert torch.allclose(gx, f * torch.cos(f * U), rtol=1e-5)
    assert (y != torch.where(U >= 0, 1.0, -1.0)).any()          # past pi/f the wave flips the sign
    # a sign does not depend on its step: d(s * sign(x / s))/ds = sign(u), whatever the estimator
    for est in (Estimator("ste", clip=False), Estimator("reste")):
        _, _, gs = _grads(U, Grid(binary=True), est, s=0.7)
        assert gs.item() == pytest.approx(0.5 * float(torch.where(U >= 0, 1.0, -1.0).sum()), rel=1e-5)
    # multi-bit: rounding forward, the sine surrogate of the residual backward
    y2, g2, _ = _grads(U, Grid(-4, 3), Estimator("biper", freq=f))
    assert torch.equal(y2, U.round().clamp(-4, 3))
    assert torch.allclose(g2, (1 - torch.cos(2 * math.pi * U)) * ((U >= -4) & (U <= 3)), atol=1e-5)


def test_zero_point_and_gradient_scale():
    grid = Grid(0, 3)
    u = torch.tensor([0.2, 1.6, 2.4])
    y, gx, gs = _grads(u - 1.0, grid, Estimator("ste"), s=1.0, z=1.0)   # x/s + z = u
    assert torch.allclose(y, u.round() - 1.0)
    # dy/ds = (Q(u) - z) - (x / s) * d(u)
    assert gs.item() == pytest.approx(0.5 * float(((u.round() - 1.0) - (u - 1.0)).sum()), rel=1e-5)
    assert lsq_gscale(16, Grid(-2, 1)) == pytest.approx(1 / math.sqrt(16 * 2))
    with pytest.raises(ValueError, match="unknown estimator"):
        _grads(U, grid, Estimator("nope"))
