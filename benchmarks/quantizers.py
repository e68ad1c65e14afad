"""Quantizers side by side (issue 12, "Speed" and "Evidence"): quality at equal size, the cost of
error correction per policy, and NNCF's AWQ + scale estimation + GPTQ against autocomp's best.

Three parts, each optional:

* ``--models`` (default ``tiny-lm digits-vit digits``): one set of policies per workload - the
  ILP sweep at ``--points`` sizes (``--proxy`` sensitivity, default ``fisher``: one gradient
  per calibration chunk, cheap on a loaded machine; size budget up to the
  uniform 4-bit policy's size) plus uniform 3- and 4-bit - each evaluated with every quantizer of
  ``--quantizers`` that is registered (the others are listed as skipped) by the PTQ evaluator
  in this process (``get_evaluator("ptq", quantizer=SPEC)``: statistics once in ``setup``, then
  one ``evaluate`` per policy). One table per workload: the metric per quantizer and its ratio
  to rtn's on the same policy.
* ``--speed`` (default ``tiny-lm bert-base``): per-policy ``evaluate`` seconds with each of ``--speed-quantizers`` (default ``gptq``)
  against ``rtn`` on ``--speed-policies`` different uniform policies, after the first; the
  one-off ``setup`` (activation ranges + the quantizer's statistics) and the first policy
  reported apart. ``bert-base`` is ``BertModel(BertConfig())`` with random weights (12 layers x
  768, ~110 M parameters) scored by cosine fidelity to its fp32 output, as in
  ``benchmarks/transformer_e2e.py``, with ``--bert-eval`` sequences of 128 tokens.
* ``--nncf`` (tiny-lm): ``nncf.compress_weights(mode=INT4_SYM, group_size=128, ratio=r,
  awq=True, scale_estimation=True, gptq=True)`` for the ratios of ``benchmarks/vs_nncf.py``
  (flags that fail fall back to the subsets that run; each failure printed) against
  ``run_search`` on ``weight_only`` and ``int4_int8`` with ``--quantizer`` = the best quantizer of
  the tiny-lm table (or ``--best``). Sizes as in vs_nncf.py (bytes held, same rule both sides).

    python benchmarks/quantizers.py [--models ...] [--speed ...] [--nncf] [--points 6]
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
QUANTIZERS = ("rtn", "gptq", "awq", "gptq+bias_correction", "awq+bias_correction")
SPACE = {"tiny-lm": "weight_only", "digits-vit": "weight_only", "digits": "mixed_precision"}


def _sibling(name: str):
    """Another benchmark script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod   # dataclasses look their module up while the script runs
    spec.loader.exec_module(mod)
    return mod


def registered(specs) -> tuple[list[str], list[str]]:
    """(the specs that build, the skipped ones with why)."""
    from autocomp.errors import AutocompError
    from autocomp.quantizers import get_quantizer

    ok, skipped = [], []
    for s in specs:
        try:
            get_quantizer(s)
            ok.append(s)
        except AutocompError as e:
            skipped.append(f"{s} ({e})")
    return ok, skipped


def uniform(layers, space, bits: int):
    """Every layer at ``bits`` with the space's own form of that width (its widest input bits)."""
    from autocomp.policy import Policy

    choices = space.choices(layers)
    picks = []
    for l in layers:
        cs = choices[l.name]
        same = [c for c in cs if c.w_bits == bits]
        picks.append((l.name, max(same, key=lambda c: c.a_bits) if same else
                      min(cs, key=lambda c: (abs(c.w_bits - bits), -c.a_bits))))
    return Policy.from_choices(picks)


def policy_set(wl, layers, space, points: int, proxy: str):
    """[(label, policy)]: the ILP sweep up to the uniform 4-bit size, then uniform 4 and 3 bits."""
    from autocomp.allocators import get_allocator
    from autocomp.budget import CostModel, parse_budget
    from autocomp.profile import model_param_count
    from autocomp.proxies import get_proxy

    cm = CostModel(layers, total_params=model_param_count(wl.model()))
    u4, u3 = uniform(layers, space, 4), uniform(layers, space, 3)
    sens = get_proxy(proxy).score(wl, layers, space)
    limits = parse_budget(f"size<={math.ceil(cm.cost('size', u4))}B").resolve(cm)
    out, seen = [], set()
    for a in get_allocator("ilp").sweep(layers, sens, space, limits, cm, points=points):
        if a.policy.id not in seen:
            seen.add(a.policy.id)
            out.append((f"ilp {a.costs['size'] / cm.fp32('size'):.1%}", a.policy))
    for label, p in (("uniform 4-bit", u4), ("uniform 3-bit", u3)):
        if p.id not in seen:
            seen.add(p.id)
            out.append((label, p))
    return sorted(out, key=lambda lp: cm.cost("size", lp[1])), cm


def evaluate_all(wl, spec: str, policies):
    """(setup seconds, [(quality, seconds)] per policy) with the PTQ evaluator under ``spec``."""
    from autocomp.evaluators import get_evaluator

    ev = get_evaluator("ptq", quantizer=spec)
    t0 = time.perf_counter()
    ev.setup(wl)
    setup = time.perf_counter() - t0
    out = []
    for p in policies:
        t0 = time.perf_counter()
        m = ev.evaluate(wl, p)
        out.append((m.quality, time.perf_counter() - t0))
    return setup, out


def quality_table(name: str, specs, points: int, proxy: str) -> dict[str, list[float]]:
    from autocomp.metrics import get_quality_metric
    from autocomp.profile import profile_model
    from autocomp.search_spaces import load_space
    from autocomp.workload import load_workload

    wl = load_workload(name)
    model = wl.model()
    layers = profile_model(model, wl.sample_input())
    space = load_space(SPACE[name])
    space.check_layers(layers)
    qm = get_quality_metric(wl.quality)
    t0 = time.perf_counter()
    pols, cm = policy_set(wl, layers, space, points, proxy)
    print(f"\n== {name} ({wl.quality}, {'higher' if qm.higher_is_better else 'lower'} is better), space "
          f"{SPACE[name]}: fp32 {wl.evaluate(model):.4f}; {len(pols)} policies in {time.perf_counter() - t0:.1f}s",
          flush=True)
    res: dict[str, list[float]] = {}
    for spec in specs:
        try:
            setup, rows = evaluate_all(wl, spec, [p for _, p in pols])
        except Exception as e:  # a quantizer that refuses this model: say so, keep the others
            print(f"  {spec}: failed on {name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}", flush=True)
            continue
        res[spec] = [q for q, _ in rows]
        print(f"  {spec}: setup {setup:.1f}s, evaluate median {statistics.median(s for _, s in rows):.2f}s/policy; "
              f"{wl.quality} {', '.join(f'{q:.4f}' for q in res[spec])}", flush=True)
    done = [s for s in specs if s in res]
    head = "  | policy | size | " + " | ".join(done) + " |"
    print("\n" + head + "\n  |---|---:|" + "---:|" * len(done))
    for i, (label, p) in enumerate(pols):
        base = res.get("rtn", [None] * len(pols))[i]
        cells = []
        for s in done:
            v = res[s][i]
            cells.append(f"{v:.4f}" + ("" if s == "rtn" or not base else f" ({v / base:.3f})"))
        print(f"  | {label} | {cm.cost('size', p) / cm.fp32('size'):.2%} | " + " | ".join(cells) + " |")
    if "rtn" in res:
        for s in done:
            if s == "rtn":
                continue
            better = sum(qm.no_worse(a, b) and a != b for a, b in zip(res[s], res["rtn"]))
            ratios = [a / b for a, b in zip(res[s], res["rtn"]) if b]
            print(f"  {s} vs rtn: better on {better}/{len(pols)} policies, geometric-mean ratio "
                  f"{math.exp(statistics.fmean(math.log(r) for r in ratios)):.4f}")
    return res


def speed_workload(name: str, bert_eval: int):
    if name != "bert-base":
        from autocomp.workload import load_workload

        return load_workload(name)
    import dataclasses

    e2e = _sibling("transformer_e2e")
    wl = e2e.bert_base()
    return dataclasses.replace(wl, eval=list(wl.eval)[:max(1, bert_eval // 4)])   # batches of 4 sequences


def speed(name: str, n: int, bert_eval: int, specs=("rtn", "gptq")) -> None:
    """Per-policy ``evaluate`` seconds of each of ``specs`` against ``rtn`` (measured first, same run)."""
    from autocomp.profile import profile_model
    from autocomp.search_spaces import load_space

    wl = speed_workload(name, bert_eval)
    model = wl.model()
    layers = profile_model(model, wl.sample_input())
    space = load_space("weight_only")
    pols = [uniform(layers, space, b) for b in (4, 3, 8, 6, 2)[:n]]
    print(f"\n== speed on {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"{len(layers)} layers, {n} uniform weight-only policies (4, 3, 8, 6, 2 bits g128 in order)", flush=True)
    evaluate_all(wl, "rtn", pols[:1])   # untimed: the process's one-off costs (imports, first kernels)
    got = {}
    for spec in ["rtn", *[s for s in specs if s != "rtn"]]:
        setup, rows = evaluate_all(wl, spec, pols)
        later = [s for _, s in rows[1:]]
        got[spec] = (setup, rows[0][1], statistics.fmean(later) if later else float("nan"))
        print(f"  {spec}: setup (ranges + statistics) {setup:.2f}s, first policy {rows[0][1]:.2f}s, "
              f"later policies mean {got[spec][2]:.2f}s  (each: {', '.join(f'{s:.2f}' for _, s in rows)}; "
              f"quality {', '.join(f'{q:.4f}' for q, _ in rows)})", flush=True)
    r = got["rtn"]
    for spec, g in got.items():
        if spec == "rtn":
            continue
        print(f"  {name}: {spec} / rtn per policy after the first {g[2] / r[2]:.2f}x (gptq's target <= 2x); "
              f"one-off: setup {g[0]:.2f}s vs {r[0]:.2f}s (+{g[0] - r[0]:.2f}s of statistics), "
              f"first policy {g[1]:.2f}s vs {r[1]:.2f}s")


def nncf_vs_best(best: str, points: int, workers: int | None) -> None:
    """tiny-lm: NNCF with AWQ + scale estimation + GPTQ against autocomp's searches under ``best``."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    from autocomp.metrics import get_quality_metric
    from autocomp.workload import load_workload

    vs = _sibling("vs_nncf")
    wl = load_workload("tiny-lm")
    qm = get_quality_metric(wl.quality)
    fp32 = copy.deepcopy(wl.model())
    fp32_bytes = vs.stored_bytes(fp32)
    # one sequence per item: NNCF's scale estimation fails on batches of 8 here (see BENCHMARKS.md)
    items = [x[i:i + 1] for x, _ in wl.calib for i in range(x.shape[0])]
    dataset = nncf.Dataset(items)
    adv = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST,
                                        min_adjusted_group_size=4)
    flag_sets = ({"awq": True, "scale_estimation": True, "gptq": True}, {"awq": True, "gptq": True},
                 {"scale_estimation": True, "gptq": True}, {"gptq": True}, {"awq": True, "scale_estimation": True})
    print(f"\n== NNCF (AWQ + scale estimation + GPTQ) vs autocomp --quantizer {best} on tiny-lm: fp32 "
          f"{fp32_bytes} B, perplexity {wl.evaluate(fp32):.4f}", flush=True)
    rows = []
    for r in vs.RATIOS:
        for flags in flag_sets:
            label = f"r={r:g} " + "+".join(k for k in ("awq", "scale_estimation", "gptq") if flags.get(k))
            t0 = time.perf_counter()
            try:
                out = nncf.compress_weights(copy.deepcopy(fp32), mode=nncf.CompressWeightsMode.INT4_SYM,
                                            group_size=128, ratio=r, dataset=dataset,
                                            sensitivity_metric=nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION,
                                            advanced_parameters=adv, **flags)
                rows.append((label, vs.stored_bytes(out), float(wl.metric(out, wl.eval)), time.perf_counter() - t0))
                print(f"  {label}: {rows[-1][1] / fp32_bytes:.2%}, ppl {rows[-1][2]:.4f}, {rows[-1][3]:.1f}s", flush=True)
                break   # the fullest flag set that runs at this ratio
            except Exception as e:
                print(f"  {label}: failed: {type(e).__name__}: {' '.join(str(e).split())[:240]}", flush=True)
    top = max((s for _, s, _, _ in rows), default=0.3 * fp32_bytes)
    found = []
    with tempfile.TemporaryDirectory() as d:
        from autocomp.report import study_points
        from autocomp.search import SearchConfig, run_search
        from autocomp.store import Store

        for space in vs.SPACES:
            store = Store(f"sqlite:///{os.path.join(d, f'{space}.db')}")
            cfg = SearchConfig(model="tiny-lm", budget=f"size<={math.ceil(top * 1.01)}B", space=space, points=points,
                               workers=workers, quantizer=best)
            t0 = time.perf_counter()
            res = run_search(cfg, store, f"q-{space.replace('_', '-')}")
            pts = study_points(store, res.study)
            # sizes by tensor bytes, as NNCF's are (the cost model's size also counts the file's header)
            from autocomp.policy import Policy
            from autocomp.search import prepare

            ctx = prepare(cfg)
            pols = {q.policy_id: Policy.from_dict(q.policy) for q in store.list_policies(res.study)}
            for p in pts:
                p["bytes"] = vs.policy_bytes(ctx.layers, ctx.cm.other_params, pols[p["policy_id"]])
            print(f"  autocomp {space} --quantizer {best}: {len(pts)} policies, {time.perf_counter() - t0:.1f}s",
                  flush=True)
            found += [(space, p) for p in pts]
    wins = 0
    print(f"\n  | NNCF | size | ppl | autocomp ({best}) best of size <= | size | ppl | ratio | |\n"
          f"  |---|---:|---:|---|---:|---:|---:|---|")
    for label, size, q, _ in rows:
        fits = [(s, p) for s, p in found if p["bytes"] <= size * (1 + 1e-9)]
        if not fits:
            print(f"  | {label} | {size / fp32_bytes:.2%} | {q:.4f} | none this small | | | | loss |")
            continue
        s, p = min(fits, key=lambda f: qm.key(f[1]["quality"]))
        win = qm.no_worse(p["quality"], q)
        wins += win
        print(f"  | {label} | {size / fp32_bytes:.2%} | {q:.4f} | {s}, {p['label'] or p['source']} | "
              f"{p['bytes'] / fp32_bytes:.2%} | {p['quality']:.4f} | {p['quality'] / q:.3f} | {'win' if win else 'LOSS'} |")
    print(f"  {wins} wins, {len(rows) - wins} losses of {len(rows)} NNCF points")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["tiny-lm", "digits-vit", "digits"])
    ap.add_argument("--quantizers", nargs="+", default=list(QUANTIZERS))
    ap.add_argument("--points", type=int, default=6)
    ap.add_argument("--proxy", default="fisher", help="the rtn sensitivity the policy sweep is allocated from")
    ap.add_argument("--speed", nargs="*", default=["tiny-lm", "bert-base"])
    ap.add_argument("--speed-policies", type=int, default=3)
    ap.add_argument("--speed-quantizers", nargs="+", default=["rtn", "gptq"],
                    help="quantizers timed against rtn (rtn is always measured first)")
    ap.add_argument("--bert-eval", type=int, default=8, help="BERT evaluation sequences (128 tokens each)")
    ap.add_argument("--nncf", action="store_true")
    ap.add_argument("--best", default=None, help="quantizer for the NNCF comparison [default: best on tiny-lm]")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    specs, skipped = registered(args.quantizers)
    print(f"quantizers: {', '.join(specs)}" + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))
    tables = {name: quality_table(name, specs, args.points, args.proxy) for name in args.models}
    for name in args.speed:
        speed(name, args.speed_policies, args.bert_eval, args.speed_quantizers)
    if args.nncf:
        best = args.best
        if best is None:
            lm = tables.get("tiny-lm") or {}
            # lower perplexity is better: the quantizer with the smallest mean over the shared policies
            best = min(lm, key=lambda s: statistics.fmean(lm[s])) if lm else "gptq"
        nncf_vs_best(best, args.points, args.workers)


if __name__ == "__main__":
    main()
