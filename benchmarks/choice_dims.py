"""Two choice dimensions measured (issues 11 and 12): per-token dynamic inputs against per-tensor
calibrated ones at equal size, and a search space with a per-layer quantizer dimension against
one quantizer for the whole study.

* ``--token`` (default ``tiny-lm digits-vit``): per workload, uniform policies ``w8aA`` and
  ``w8aAt`` (``A`` = 8 and 4: every linear layer with a token axis takes per-token inputs in the
  ``t`` policy; embeddings and the LM head weight-only, other layers as in the plain one), each
  scored by the PTQ evaluator in this process. Same weights, same size: only the input ranges
  differ. Prints the metric of each and the per-token / per-tensor ratio.
* ``--quantizer-dim [A,B]`` (digits; default ``rtn,gptq``): three searches of the same space
  ``w_bits [2, 3, 4, 8]``, ``a8``, ``--points`` budget points, proxy ``quant_mse``, on a local
  Ray with ``--workers``: A for the study, B for the study, and ``quantizer: [A, B]`` per layer. Prints each front
  (size, accuracy of every allocated policy) and, per budget point, the per-layer front's accuracy over each single one.

    python benchmarks/choice_dims.py [--token tiny-lm digits-vit] [--quantizer-dim [rtn,absmax]] [--points 4]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def token_table(spec: str) -> None:
    from autocomp.evaluators import get_evaluator
    from autocomp.policy import Choice, Policy
    from autocomp.profile import profile_model
    from autocomp.search_spaces import has_token_axis
    from autocomp.workload import load_workload

    wl = load_workload(spec)
    layers = profile_model(wl.model(), wl.sample_input())
    ev = get_evaluator("ptq")
    print(f"\n{spec} ({wl.quality}): uniform w8, inputs per tensor (calibrated) vs per token (dynamic)")
    print(f"  fp32: {ev.evaluate(wl, Policy.uniform([l.name for l in layers], Choice(32, 32))).quality:.4f}")
    for a in (8, 4):
        got = {}
        for act in ("tensor", "token"):
            pol = Policy.from_choices([(l.name, Choice(8, 32) if l.weight_only else
                                        Choice(8, a, act=act if has_token_axis(l) else "tensor")) for l in layers])
            t0 = time.perf_counter()
            got[act] = ev.evaluate(wl, pol).quality
            print(f"  w8a{a} per {act:<6}: {got[act]:.4f}   ({time.perf_counter() - t0:.1f} s)")
        print(f"  a{a}: per-token / per-tensor = {got['token'] / got['tensor']:.4f}")


def quantizer_dim(points: int, workers: int, pair: tuple[str, str] = ("rtn", "gptq")) -> None:
    from autocomp.report import study_points
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store

    d = Path(tempfile.mkdtemp())
    base = "name: q\nw_bits: [2, 3, 4, 8]\na_bits: [8]\n"
    (d / "one.yaml").write_text(base)
    (d / "per_layer.yaml").write_text(base + f"quantizer: [{pair[0]}, {pair[1]}]\n")
    store = Store(f"sqlite:///{d / 'q.db'}")
    runs = {pair[0]: ("one.yaml", pair[0]), pair[1]: ("one.yaml", pair[1]), "per-layer": ("per_layer.yaml", pair[0])}
    fronts = {}
    for name, (space, quantizer) in runs.items():
        t0 = time.perf_counter()
        res = run_search(SearchConfig(model="digits", space=str(d / space), budget="size<=12%", points=points,
                                      proxy="quant_mse", workers=workers, baselines=(), quantizer=quantizer),
                         store, name.replace("-", "_"))
        pts = sorted((p["size"], p["accuracy"], p["label"]) for p in study_points(store, res.study, "ptq")
                     if not p["baseline"])
        fronts[name] = {p[2]: p for p in pts}
        print(f"\n{name}: {len(pts)} front points, {time.perf_counter() - t0:.0f} s")
        for size, acc, label in pts:
            print(f"  {label:<28} size {size:>10.0f} B  accuracy {acc:.4f}")
    print("\nper budget point (same label): per-layer accuracy / single quantizer's")
    for label, (size, acc, _) in fronts["per-layer"].items():
        row = [f"{label:<28} per-layer {acc:.4f}"]
        for one in pair:
            if label in fronts[one]:
                row.append(f"/{one} {acc / fronts[one][label][1]:.4f}")
        print("  " + "  ".join(row))
    store.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--token", nargs="*", default=["tiny-lm", "digits-vit"])
    ap.add_argument("--quantizer-dim", nargs="?", const="rtn,gptq", default=None,
                    help="the two quantizers, comma-separated (default rtn,gptq)")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for spec in a.token:
        token_table(spec)
    if a.quantizer_dim:
        quantizer_dim(a.points, a.workers, tuple(a.quantizer_dim.split(",")))


if __name__ == "__main__":
    main()
