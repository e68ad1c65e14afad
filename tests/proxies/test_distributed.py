"""Proxy work split into Ray tasks: N workers give exactly the one-worker, one-process result."""
from __future__ import annotations

import pytest

from autocomp.proxies import get_proxy, list_proxies
from autocomp.search_spaces import load_space
from autocomp.workers.proxy_tasks import score_on_ray

FAST = {
    "hessian_trace": {"max_probes": 3, "min_probes": 3},   # one task per batch
    "hessian_eig": {"max_iter": 3},                          # one task per layer group
}
SPLIT = ("hessian_trace", "hessian_eig", "lrp", "loss_delta")   # by batch or by layer group


@pytest.mark.parametrize("proxy", list_proxies())
def test_n_workers_equal_one_worker_and_one_process(proxy, ray_session, digits, digits_layers):
    space = load_space("w4a8")
    opts = FAST.get(proxy, {})
    one = score_on_ray("digits", proxy, digits_layers, space, opts, workers=1)
    two = score_on_ray("digits", proxy, digits_layers, space, opts, workers=2)
    local = get_proxy(proxy, **opts).score(digits, digits_layers, space)
    if proxy in SPLIT:
        assert len(get_proxy(proxy, **opts).parts(digits, digits_layers, space)) > 1
    assert one.omega == two.omega == local.omega
    assert one.layer_scores == two.layer_scores == local.layer_scores
    assert list(one.omega) == [l.name for l in digits_layers]


def test_single_batch_traces_split_by_probe_match_the_serial_loop(ray_session, tmp_path, digits_layers):
    from autocomp.proxies.hessian import batch_traces
    from autocomp.workload import load_workload

    (tmp_path / "one_batch.py").write_text(
        "from autocomp.workloads.digits import digits\n"
        "def make():\n"
        "    wl = digits()\n"
        "    wl.calib = wl.calib[:1]\n"
        "    return wl\n")
    spec = f"{tmp_path / 'one_batch.py'}:make"
    opts = {"max_probes": 12, "min_probes": 5, "tol": 0.05, "probe_chunk": 3}
    space = load_space("w4a8")
    one = score_on_ray(spec, "hessian_trace", digits_layers, space, opts, workers=1)
    two = score_on_ray(spec, "hessian_trace", digits_layers, space, opts, workers=2)
    wl = load_workload(spec)
    assert one.omega == two.omega == get_proxy("hessian_trace", **opts).score(wl, digits_layers, space).omega
    names = [l.name for l in digits_layers]
    serial, used = batch_traces(wl.model(), wl.loss, wl.calib[0], names, 0, 0, 0.05, 12, 5, activations=True)
    mods = dict(wl.model().named_modules())
    for n in names:  # layer score = Tr/n, same probes as the serial loop (threads may round differently)
        assert one.layer_scores[n] == pytest.approx(serial[n] / mods[n].weight.numel(), rel=1e-4, abs=1e-9)
    assert 5 <= used <= 12
