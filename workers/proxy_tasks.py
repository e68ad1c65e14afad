"""Proxy scoring as Ray tasks, split by batch, probe or layer group.

The split never depends on the number of workers: each part draws its randomness from seeds
named by (seed, batch, probe) or by layer name, and parts are merged in a fixed order, so the
result with N workers is the result with one. ``workers`` only bounds the parts in flight.

* ``hessian_trace``: one task per calibration batch (Hutchinson with its own stopping rule); with
  a single batch, tasks of ``probe_chunk`` probes, truncated where the serial loop would stop.
* ``hessian_eig``, ``loss_delta``: one task per layer group.
* ``lrp``: one task per calibration batch.
* the others (one cheap pass): a single task.

Example:
    >>> sens = score_on_ray("digits", "hessian_trace", layers, space, workers=2)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

LAYER_SPLIT = ("hessian_eig", "loss_delta")
BATCH_SPLIT = ("hessian_trace", "lrp")


def _workload(spec: str, batches=None, data: str = "real", seed: int = 0):
    import torch

    from autocomp.proxies.distilled import with_data
    from autocomp.workers.runtime_env import worker_spec
    from autocomp.workload import load_workload

    torch.set_num_threads(1)
    wl = load_workload(worker_spec(spec))   # the shipped copy of a user's file, not the controller's path
    if batches is not None:  # distilled on the controller once, shipped to every task
        import dataclasses

        return dataclasses.replace(wl, calib=list(batches))
    return with_data(wl, data, seed)


def run_part(spec: str, proxy: str, layers: list[dict], space: dict, options: dict, part: dict,
             batches=None) -> dict[str, Any]:
    """Compute one part; plain values in and out so it runs on any Ray node."""
    from autocomp.profile import LayerInfo
    from autocomp.proxies import get_proxy
    from autocomp.search_spaces import space_from_dict

    wl = _workload(spec, batches, options.get("data", "real"), int(options.get("seed", 0)))
    ls = [LayerInfo.from_dict(d) for d in layers]
    sp = space_from_dict(space).bind(ls)  # @first/@last mean the model's, not a part's
    names = [l.name for l in ls]
    kind = part["kind"]
    seed = int(options.get("seed", 0))
    if kind == "trace_batch":
        from autocomp.proxies.hessian import _needs_act, batch_traces

        b = part["batch"]
        tr, used = batch_traces(wl.model(), wl.loss, wl.calib[b], names, seed, b, float(options.get("tol", 1e-2)),
                                int(options.get("max_probes", 32)), int(options.get("min_probes", 8)),
                                _needs_act(ls, sp), estimator=str(options.get("estimator", "auto")))
        return {"traces": tr, "weight": int(wl.calib[b][1].shape[0]), "probes": used}
    if kind == "trace_probes":
        from autocomp.proxies.hessian import _needs_act, probe_values

        vals = probe_values(wl.model(), wl.loss, wl.calib[0], names, part["probes"], seed, 0, _needs_act(ls, sp),
                            str(options.get("estimator", "auto")))
        return {"values": vals}
    if kind == "eig":
        from autocomp.proxies.hessian import top_eigenvalues

        return {"eigs": top_eigenvalues(wl.model(), wl.loss, wl.calib, part["layers"], seed,
                                        float(options.get("tol", 1e-3)), int(options.get("max_iter", 30)))}
    if kind == "lrp_batch":
        from autocomp.proxies.lrp import contribution_scores

        b = part["batch"]
        sc = contribution_scores(wl.model(), [wl.calib[b]], names, default_rule=str(options.get("rule", "epsilon")),
                                 eps=float(options.get("eps", 1e-6)), gamma=float(options.get("gamma", 0.25)))
        return {"scores": sc, "weight": int(wl.calib[b][1].shape[0])}
    subset = [l for l in ls if l.name in set(part.get("layers", names))]
    opts = {k: v for k, v in options.items() if k not in ("data", "workers")}
    return get_proxy(proxy, **opts).score(wl, subset, sp).to_dict()


def plan(proxy: str, n_batches: int, layers: Sequence, options: dict, groups: int = 4) -> list[dict]:
    """The parts of a proxy's work (independent of the worker count)."""
    names = [l.name for l in layers]
    if proxy == "hessian_trace" and n_batches > 1:
        return [{"kind": "trace_batch", "batch": b} for b in range(n_batches)]
    if proxy == "lrp":
        return [{"kind": "lrp_batch", "batch": b} for b in range(n_batches)]
    if proxy in LAYER_SPLIT:
        g = max(1, min(groups, len(names)))
        return [{"kind": "eig" if proxy == "hessian_eig" else "layers", "layers": names[i::g]} for i in range(g)]
    return [{"kind": "whole"}]


def _run(task, args_list: list[tuple], workers: int | None, stop: Callable[[list], bool] | None = None) -> list:
    """Run tasks in order with at most ``workers`` in flight; results in submission order."""
    import ray

    width = max(1, workers or len(args_list))
    results: list = []
    i = 0
    while i < len(args_list):
        refs = [task.remote(*a) for a in args_list[i:i + width]]
        results.extend(ray.get(refs))
        i += width
        if stop is not None and stop(results):
            break
    return results


def score_on_ray(spec: str, proxy: str, layers, space, options: dict | None = None, workers: int | None = None,
                 data: str = "real", probe_chunk: int = 4):
    """Score ``proxy`` on Ray; returns a :class:`~autocomp.proxies.Sensitivity`.

    Args:
        workers: parts in flight at once (default: one per cluster CPU); never changes the result.
        data: ``real`` or ``distilled`` (ZeroQ batches, made once here and shipped to the tasks).
    """
    import ray

    from autocomp.proxies import Sensitivity, get_proxy
    from autocomp.proxies.distilled import with_data
    from autocomp.proxies.hessian import combine_batches, reduce_probes, stop_index
    from autocomp.workers.session import cluster_cpus
    from autocomp.workload import load_workload

    options = dict(options or {})
    get_proxy(proxy)  # unknown names fail before Ray work
    workers = workers or cluster_cpus()
    seed = int(options.get("seed", 0))
    wl = with_data(load_workload(spec), data, seed)
    batches_ref = ray.put(list(wl.calib)) if data != "real" else None
    task = ray.remote(num_cpus=1, max_retries=2)(run_part)
    ld, sd = [l.to_dict() for l in layers], space.to_dict()
    parts = plan(proxy, len(wl.calib), layers, options)

    if proxy == "hessian_trace" and parts == [{"kind": "whole"}]:  # one batch: split by probe
        tol, cap, lo = float(options.get("tol", 1e-2)), int(options.get("max_probes", 32)), int(options.get("min_probes", 8))
        chunks = [list(range(i, min(i + probe_chunk, cap))) for i in range(0, cap, probe_chunk)]

        def flat(res):
            return [v for r in res for v in r["values"]]

        res = _run(task, [(spec, proxy, ld, sd, options, {"kind": "trace_probes", "probes": c}, batches_ref)
                          for c in chunks], workers,
                   stop=lambda rs: stop_index([sum(d.values()) for d in flat(rs)], tol, lo) is not None)
        vals = flat(res)
        k = stop_index([sum(d.values()) for d in vals], tol, lo) or len(vals)
        traces = reduce_probes(vals, k)
        return get_proxy(proxy, **{**options, "traces": traces}).score(wl, layers, space)

    res = _run(task, [(spec, proxy, ld, sd, options, p, batches_ref) for p in parts], workers)
    if proxy == "hessian_trace":
        traces = combine_batches([(r["traces"], r["weight"]) for r in res])
        return get_proxy(proxy, **{**options, "traces": traces}).score(wl, layers, space)
    if proxy == "hessian_eig":
        eigs = {k: v for r in res for k, v in r["eigs"].items()}
        return get_proxy(proxy, **{**options, "eigs": eigs}).score(wl, layers, space)
    if proxy == "lrp":
        total = sum(r["weight"] for r in res) or 1
        scores = {l.name: sum(r["scores"][l.name] * r["weight"] for r in res) / total for l in layers}
        return get_proxy(proxy, **{**options, "scores": scores}).score(wl, layers, space)
    merged = {"proxy": proxy, "omega": {}, "layer_scores": {}}
    for r in res:
        merged["omega"].update(r["omega"])
        merged["layer_scores"].update(r["layer_scores"])
    # Keep the profile's layer order whatever order the groups came back in.
    order = [l.name for l in layers]
    merged["omega"] = {n: merged["omega"][n] for n in order if n in merged["omega"]}
    merged["layer_scores"] = {n: merged["layer_scores"][n] for n in order if n in merged["layer_scores"]}
    return Sensitivity.from_dict(merged)


def score_proxy(spec: str, proxy: str, layers: list[dict], space: dict, options: dict | None = None) -> dict[str, Any]:
    """Score ``proxy`` for ``spec``'s model in this process (plain dicts in and out)."""
    from autocomp.profile import LayerInfo
    from autocomp.proxies import get_proxy
    from autocomp.search_spaces import space_from_dict

    options = dict(options or {})
    wl = _workload(spec, None, options.pop("data", "real"), int(options.get("seed", 0)))
    ls = [LayerInfo.from_dict(d) for d in layers]
    return get_proxy(proxy, **options).score(wl, ls, space_from_dict(space)).to_dict()
