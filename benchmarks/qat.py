"""QAT estimators against PTQ on ``digits`` and ``digits-vit`` at 2, 1.58 and 1 weight bits.

Uniform policies (first and last layers at 8-bit weights, as the ``binary`` space has them;
inputs at 8 bits): PTQ (rtn), then the ``qat`` evaluator with each estimator (``ste``, ``reste``,
``biper``), with and without learned scales (LSQ), with and without logits distillation, all with
the same step budget and seed, on the workloads' ``train`` split. Prints one markdown table with
each method's accuracy and its ratio to PTQ's at the same policy (and to plain STE's).

Run:
    python benchmarks/qat.py                      # ~10 min on 2 loaded cores (50 steps)
    python benchmarks/qat.py --steps 200 --workloads digits
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

from autocomp.evaluators import get_evaluator
from autocomp.modules import is_quantizable
from autocomp.policy import Choice, Policy
from autocomp.workload import load_workload

ESTIMATORS = ("ste", "reste", "biper")


def policy_at(names: list[str], bits: float) -> Policy:
    last = len(names) - 1
    return Policy.from_choices([(n, Choice(8 if i in (0, last) else bits, 8)) for i, n in enumerate(names)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workloads", default="digits,digits-vit")
    ap.add_argument("--bits", default="2,1.58,1", help="weight bit-widths of the inner layers")
    args = ap.parse_args()
    torch.set_num_threads(1)   # on a shared 2-core machine one thread per process is fastest
    rows = []
    t_all = time.perf_counter()
    for spec in args.workloads.split(","):
        wl = load_workload(spec)
        names = [n for n, m in wl.model().named_modules() if n and is_quantizable(m)]
        fp32 = wl.evaluate(wl.model())
        for bits in [float(b) if "." in b else int(b) for b in args.bits.split(",")]:
            pol = policy_at(names, bits)
            ptq = get_evaluator("ptq").evaluate(wl, pol).quality
            rows.append((spec, bits, "ptq", "-", "-", ptq, 1.0, None, 0.0))
            ste = None
            for est, learn, kd in itertools.product(ESTIMATORS, (False, True), (0.0, 1.0)):
                t0 = time.perf_counter()
                m = get_evaluator("qat", steps=args.steps, seed=args.seed, lr=args.lr, estimator=est,
                                  learn_scales=learn, distill=kd).evaluate(wl, pol)
                ste = m.quality if (est, learn, kd) == ("ste", False, 0.0) else ste
                rows.append((spec, bits, est, "yes" if learn else "no", "yes" if kd else "no", m.quality,
                             m.quality / max(ptq, 1e-9), m.quality / max(ste, 1e-9), time.perf_counter() - t0))
                print(f"{spec} w{bits:g} {est} learn={learn} distill={kd}: {m.quality:.4f} "
                      f"(ptq {ptq:.4f}, fp32 {fp32:.4f}) {rows[-1][-1]:.1f}s", flush=True)
    print(f"\nsteps={args.steps} seed={args.seed} lr={args.lr}; total {time.perf_counter() - t_all:.0f}s\n")
    print("| workload | w bits | method | learn scales | distill | accuracy | / PTQ | / STE | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec, bits, est, learn, kd, q, r, rs, s in rows:
        rs_txt = "-" if rs is None else f"{rs:.3f}"
        print(f"| {spec} | {bits:g} | {est} | {learn} | {kd} | {q:.4f} | {r:.2f} | {rs_txt} | {s:.1f} |")


if __name__ == "__main__":
    main()
