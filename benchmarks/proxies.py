"""Wall time of every proxy on ``digits`` and resnet18, and the speed-up from 1 to 2 Ray workers.

    python benchmarks/proxies.py [--models digits,resnet18] [--ray]

Each proxy runs in this process with one thread (the setting of a Ray task). resnet18 uses
torchvision's architecture with random weights and one 16 x 3 x 64 x 64 batch, with the Hessian
proxies cut to a few probes/iterations (their cost is linear in those counts). With ``--ray`` the
split proxies run through :func:`autocomp.workers.proxy_tasks.score_on_ray` with 1 and 2 workers
(the results are asserted equal).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESNET = f"{os.path.join(HERE, 'resnet18_workload.py')}:make"
OPTS = {
    "digits": {},
    "resnet18": {"hessian_trace": {"max_probes": 4, "min_probes": 4}, "hessian_eig": {"max_iter": 2}},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits,resnet18")
    ap.add_argument("--ray", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from autocomp.profile import profile_model
    from autocomp.proxies import get_proxy, list_proxies
    from autocomp.search_spaces import load_space
    from autocomp.workload import load_workload

    space = load_space("mixed_precision")
    for key in a.models.split(","):
        spec = RESNET if key == "resnet18" else key
        wl = load_workload(spec)
        layers = profile_model(wl.model(), wl.sample_input())
        print(f"\n{key}: {len(layers)} layers, {len(wl.calib)} calibration batch(es), space mixed_precision")
        for name in list_proxies():
            t0 = time.perf_counter()
            get_proxy(name, **OPTS[key].get(name, {})).score(wl, layers, space)
            print(f"  {name:14s} {time.perf_counter() - t0:8.2f} s   {OPTS[key].get(name, '')}")
        sys.stdout.flush()
    if a.ray:
        ray_speedup(space)


def ray_speedup(space) -> None:
    from autocomp.profile import profile_model
    from autocomp.workers.proxy_tasks import score_on_ray
    from autocomp.workers.session import ensure_ray
    from autocomp.workload import load_workload

    ensure_ray(None, num_cpus=2)
    wl = load_workload("digits")
    layers = profile_model(wl.model(), wl.sample_input())
    print("\ndigits on Ray (tasks of one thread), 1 vs 2 workers")
    for name, opts in (("hessian_trace", {}), ("hessian_eig", {}), ("loss_delta", {}), ("lrp", {})):
        score_on_ray("digits", name, layers, space, opts, workers=2)   # warm the worker processes
        t0 = time.perf_counter()
        one = score_on_ray("digits", name, layers, space, opts, workers=1)
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        two = score_on_ray("digits", name, layers, space, opts, workers=2)
        t2 = time.perf_counter() - t0
        assert one.omega == two.omega
        print(f"  {name:14s} 1 worker {t1:7.2f} s   2 workers {t2:7.2f} s   speed-up {t1 / t2:.2f}x")


if __name__ == "__main__":
    main()
