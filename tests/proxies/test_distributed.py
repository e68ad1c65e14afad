"""Proxy work split into Ray tasks: N workers give exactly the one-worker result."""
from __future__ import annotations

import pytest

from autocomp.search_spaces import load_space
from autocomp.workers.proxy_tasks import plan, score_on_ray

CASES = {
    "hessian_trace": {"max_probes": 3, "min_probes": 3},   # one task per batch
    "hessian_eig": {"max_iter": 3},                          # one task per layer group
    "lrp": {},                                               # one task per batch
    "loss_delta": {},                                        # one task per layer group
}


@pytest.mark.parametrize("proxy", sorted(CASES))
def test_n_workers_equal_one_worker(proxy, ray_session, digits, digits_layers):
    space = load_space("w4a8")
    one = score_on_ray("digits", proxy, digits_layers, space, CASES[proxy], workers=1)
    two = score_on_ray("digits", proxy, digits_layers, space, CASES[proxy], workers=2)
    assert len(plan(proxy, len(digits.calib), digits_layers, CASES[proxy])) > 1
    assert one.omega == two.omega
    assert one.layer_scores == two.layer_scores
    assert list(one.omega) == [l.name for l in digits_layers]


def test_single_batch_traces_split_by_probe_match_the_serial_loop(ray_session, tmp_path, digits_layers):
    import torch

    from autocomp.proxies.hessian import batch_traces
    from autocomp.workload import load_workload

    (tmp_path / "one_batch.py").write_text(
        "from autocomp.workloads.digits import digits\n"
        "def make():\n"
        "    wl = digits()\n"
        "    wl.calib = wl.calib[:1]\n"
        "    return wl\n")
    spec = f"{tmp_path / 'one_batch.py'}:make"
    opts = {"max_probes": 12, "min_probes": 5, "tol": 0.05}
    space = load_space("w4a8")
    one = score_on_ray(spec, "hessian_trace", digits_layers, space, opts, workers=1, probe_chunk=3)
    two = score_on_ray(spec, "hessian_trace", digits_layers, space, opts, workers=2, probe_chunk=3)
    assert one.omega == two.omega
    wl = load_workload(spec)
    names = [l.name for l in digits_layers]
    serial, used = batch_traces(wl.model(), wl.loss, wl.calib[0], names, 0, 0, 0.05, 12, 5, activations=True)
    mods = dict(wl.model().named_modules())
    for n in names:  # layer score = Tr/n, same probes as the serial loop (threads may round differently)
        assert one.layer_scores[n] == pytest.approx(serial[n] / mods[n].weight.numel(), rel=1e-4, abs=1e-9)
    assert 5 <= used <= 12
