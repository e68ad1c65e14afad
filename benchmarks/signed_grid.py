"""Symmetric weight grids (session 6): positive scales only (before), both orientations of the
signed grid (rtn's default now), and the signed absmax scale without clipping (gptq's default now).

    python benchmarks/signed_grid.py [tiny-lm:weight_only digits:mixed_precision digits-vit:mixed_precision]

The codes of a ``b``-bit symmetric grid run ``-2^(b-1)..2^(b-1)-1``. Before session 6 every scale
was positive (``amax·r / (2^(b-1)-1)``, the MSE-best clip ratio ``r``), so the extra negative
code served clipped weights only. Now rtn's MSE search also tries negative scales that put the
row's largest-magnitude weight on that code (finer steps, nothing clipped at ``r = 1``), and
gptq's default grid is that signed absmax scale with no clip search (``gptq(clip=true)`` is the
MSE-clipped one). For each workload and uniform 2 / 3 / 4 bits (tiny-lm with its embeddings at
8 bits, as LLM compressors keep them), the same policy is evaluated under each grid with rtn
and with gptq, in one run; the last columns are the ratios of the new defaults to the old grid
(quality in the workload's direction: > 1 is better for accuracy, < 1 for perplexity).
"""
from __future__ import annotations

import copy
import sys

import torch


def main() -> None:
    import autocomp.quant as Q
    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.evaluators.ptq import ACT_BITS, build_quantizer
    from autocomp.modules import activation_layers
    from autocomp.policy import apply
    from autocomp.quantizers import collect_stats
    from autocomp.search import SearchConfig, prepare
    from autocomp.stages.allocate import embeddings_at_8, uniform_policy
    from autocomp.workload import load_workload

    both = Q._symmetric_scales

    def positive_only(flat, amax, qmax, b):   # the grid before session 6
        for r in (Q._CLIP_RATIOS if b <= 8 else (1.0,)):
            yield amax * r / qmax

    def absmax(flat, amax, qmax, b):
        yield Q.signed_absmax_scale(flat, b)

    grids = (("positive", positive_only), ("both", both), ("absmax", absmax))
    specs = sys.argv[1:] or ["tiny-lm:weight_only", "digits:mixed_precision", "digits-vit:mixed_precision"]
    print("| workload | bits | rtn positive | rtn both (new) | rtn absmax | gptq clip positive | gptq clip both "
          "| gptq absmax (new) | rtn new / old | gptq new / old |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in specs:
        name, space = spec.split(":")
        wl = load_workload(name)
        ctx = prepare(SearchConfig(model=name, space=space, budget="size<=50%"))
        fp32 = copy.deepcopy(wl.model())
        gptq = build_quantizer("gptq(clip=true)")   # with the grid swapped below, the rows' grid
        names = [n for n, _ in activation_layers(fp32)]
        ranges = activation_ranges(activation_stats(fp32, names, wl.calib), ACT_BITS)
        stats = collect_stats(fp32, wl.calib, names, gptq.needs)
        for b in (2, 3, 4):
            pol = (embeddings_at_8(ctx, b) if name == "tiny-lm" else None) or uniform_policy(ctx, b)
            if pol is None:
                continue
            row = {}
            for q in ("rtn", "gptq"):
                for tag, grid in grids:
                    Q._symmetric_scales = grid
                    try:
                        with torch.no_grad():
                            model = apply(fp32, pol, ranges) if q == "rtn" else \
                                gptq.apply(fp32, pol, ranges, stats, batches=wl.calib)
                            row[q, tag] = float(wl.metric(model, wl.eval))
                    finally:
                        Q._symmetric_scales = both
            cells = [row["rtn", "positive"], row["rtn", "both"], row["rtn", "absmax"],
                     row["gptq", "positive"], row["gptq", "both"], row["gptq", "absmax"]]
            print(f"| {name} ({wl.quality}) | {b} | " + " | ".join(f"{v:.4f}" for v in cells)
                  + f" | {row['rtn', 'both'] / row['rtn', 'positive']:.3f}"
                  + f" | {row['gptq', 'absmax'] / row['gptq', 'positive']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
