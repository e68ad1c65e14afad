"""Quantization-aware NAS + mixed precision against mixed precision of the fixed architecture.

For each workload: one study searches per-layer bits of the fixed model (``mixed_precision``, ILP
sweep, PTQ), then ``--trials nas`` runs N NAS trials (architecture jointly with per-block bits,
trained under fake-quantized weights for S steps, PTQ-scored; ASHA stops the weak ones). Both
fronts come from the same study database. Printed, at equal size and at equal BitOps:

- for each point of the fixed architecture's front: the best NAS accuracy at no more cost, and
  the difference (NAS - fixed, in points of accuracy);
- the cost ratio: the cheapest NAS candidate within 0.5 points of the fixed front's best accuracy
  over the cheapest fixed policy within 0.5 points of it (below 1: NAS is cheaper).

With ``--qat-control`` (the default) the same study then runs ``--trials qat`` on the fixed
architecture's PTQ-front policies (all of them), each fine-tuned with QAT for the same step budget
as a NAS trial (``--steps``), and the same tables compare NAS against that fixed + QAT front (each
fixed policy at the better of its PTQ and QAT accuracy): how much of NAS's gain is training in the
loop rather than the architecture.

Run:
    python benchmarks/nas.py                                  # ~10 min on 2 loaded cores
    python benchmarks/nas.py --workloads digits,digits-vit --nas 16 --steps 300
    python benchmarks/nas.py --no-qat-control                 # NAS against the PTQ front only
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autocomp.report import study_points
from autocomp.search import SearchConfig, run_search
from autocomp.store import Store

COSTS = (("size", 1024.0, "KiB"), ("bitops", 1e6, "M"))


def pareto(points: list[dict], cost: str) -> list[dict]:
    """Non-dominated (accuracy up, ``cost`` down), by increasing cost."""
    out, best = [], -1.0
    for p in sorted(points, key=lambda p: (p[cost], -p["quality"])):
        if p["quality"] > best:
            out.append(p)
            best = p["quality"]
    return out


def best_within(points: list[dict], cost: str, limit: float) -> dict | None:
    ok = [p for p in points if p[cost] <= limit * (1 + 1e-9)]
    return max(ok, key=lambda p: p["quality"]) if ok else None


def cheapest_reaching(points: list[dict], cost: str, acc: float) -> dict | None:
    ok = [p for p in points if p["quality"] >= acc]
    return min(ok, key=lambda p: p[cost]) if ok else None


def table(fixed: list[dict], nas: list[dict], cost: str, unit: float, unit_name: str) -> list[str]:
    lines = [f"| fixed {cost} ({unit_name}) | fixed acc % | best NAS acc % at <= that {cost} | NAS - fixed (pts) |",
             "|---:|---:|---:|---:|"]
    for p in pareto(fixed, cost):
        q = best_within(nas, cost, p[cost])
        got = "-" if q is None else f"{100 * q['quality']:.1f}"
        diff = "-" if q is None else f"{100 * (q['quality'] - p['quality']):+.1f}"
        lines.append(f"| {p[cost] / unit:.1f} | {100 * p['quality']:.1f} | {got} | {diff} |")
    top = max(p["quality"] for p in fixed)
    f, q = cheapest_reaching(fixed, cost, top - 0.005), cheapest_reaching(nas, cost, top - 0.005)
    if q is None:
        lines.append(f"\nno NAS candidate within 0.5 pts of the fixed front's best ({100 * top:.1f} %)")
    else:
        lines.append(f"\nwithin 0.5 pts of the fixed front's best ({100 * top:.1f} %): fixed needs "
                     f"{f[cost] / unit:.1f} {unit_name}, NAS {q[cost] / unit:.1f} {unit_name} "
                     f"(ratio NAS/fixed = {q[cost] / f[cost]:.3f}; NAS acc {100 * q['quality']:.1f} %)")
    return lines


def run(model: str, n: int, steps: int, points: int, workers: int, db: str, qat_control: bool = True) -> None:
    store = Store(db)
    t0 = time.perf_counter()
    cfg = SearchConfig(model=model, budget="size<=25%", points=points, workers=workers, seed=0)
    run_search(cfg, store, f"fixed-{model}")
    t_fixed = time.perf_counter() - t0
    cfg = SearchConfig(model=model, budget="size<=25%", points=points, workers=workers, seed=0, trials="nas",
                       nas_samples=n, trial_steps=steps)
    t0 = time.perf_counter()
    run_search(cfg, store, f"fixed-{model}")      # resumes the study: only the NAS trials run
    t_nas = time.perf_counter() - t0
    st = store.get_study(f"fixed-{model}")
    fixed = [p for p in study_points(store, st, "ptq") if not p["baseline"] or p["source"] == "uniform"]
    nas = study_points(store, st, "nas")
    held = [p for p in store.list_policies(st) if p.source == "nas"]
    stopped = sum(1 for p in held if "stopped" in p.info)
    print(f"\n### {model}: {len(fixed)} fixed-architecture PTQ points (sweep {t_fixed:.0f} s), {len(held)} NAS "
          f"trials x {steps} steps ({len(nas)} ran to the end, {stopped} stopped by ASHA; {t_nas:.0f} s)\n")
    for cost, unit, name in COSTS:
        print(f"\nat equal {cost}:\n")
        print("\n".join(table(fixed, nas, cost, unit, name)))
    best = max(nas, key=lambda p: p["quality"])
    print(f"\nbest NAS candidate: {best['label']}, acc {100 * best['quality']:.1f} %, size {best['size'] / 1024:.1f} KiB, "
          f"bitops {best['bitops'] / 1e6:.1f} M")
    if qat_control:
        control(store, cfg, model, steps, len(fixed), nas)


def control(store: Store, cfg: SearchConfig, model: str, steps: int, k: int, nas: list[dict]) -> None:
    """The fixed architecture's PTQ front fine-tuned by ``--trials qat`` (``steps`` per trial, as a
    NAS trial), then NAS against that fixed + QAT front at equal size and BitOps."""
    import dataclasses

    t0 = time.perf_counter()
    qcfg = dataclasses.replace(cfg, trials="qat", top=k, trial_steps=steps, nas_samples=0)
    run_search(qcfg, store, f"fixed-{model}")     # resumes the study: only the QAT trials run
    t_qat = time.perf_counter() - t0
    st = store.get_study(f"fixed-{model}")
    # each fixed-architecture policy at the better of its PTQ and QAT accuracy (the merged front's rule)
    both = [p for p in study_points(store, st, None)
            if p["source"] != "nas" and (not p["baseline"] or p["source"] == "uniform")]
    trained = [p for p in both if p["kind"] == "qat"]
    n_qat = len(study_points(store, st, "qat"))
    print(f"\n### {model}: NAS against the fixed architecture + QAT ({n_qat} policies of the PTQ front fine-tuned, "
          f"{steps} steps each, {t_qat:.0f} s; QAT beat PTQ on {len(trained)})\n")
    for cost, unit, name in COSTS:
        print(f"\nat equal {cost} (fixed = fixed + QAT):\n")
        print("\n".join(table(both, nas, cost, unit, name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="digits")
    ap.add_argument("--nas", type=int, default=12, help="NAS trials per workload")
    ap.add_argument("--steps", type=int, default=150, help="training steps per NAS candidate")
    ap.add_argument("--points", type=int, default=6, help="budget points of the fixed architecture's sweep")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", default=None)
    ap.add_argument("--qat-control", action=argparse.BooleanOptionalAction, default=True,
                    help="also compare NAS with the fixed front fine-tuned by --trials qat (same steps per trial)")
    a = ap.parse_args()
    db = a.db or f"sqlite:///{Path(tempfile.mkdtemp()) / 'nas.db'}"
    for model in a.workloads.split(","):
        run(model.strip(), a.nas, a.steps, a.points, a.workers, db, a.qat_control)


if __name__ == "__main__":
    main()
