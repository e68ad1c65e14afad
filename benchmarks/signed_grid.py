"""Symmetric weight grids (session 6): rtn's positive MSE-clipped scales, the same search over
both orientations of the signed grid (not offered as a quantizer; measured here), and the full
range without clipping (the ``absmax`` quantizer, ``gptq(clip=false)``).

    python benchmarks/signed_grid.py [tiny-lm:weight_only digits:mixed_precision digits-vit:mixed_precision]

The codes of a ``b``-bit symmetric grid run ``-2^(b-1)..2^(b-1)-1``. rtn's scales are positive
(``amax·r / (2^(b-1)-1)``, the MSE-best clip ratio ``r``), so the extra negative code only holds
clipped weights. *both* also tries negative scales that put the row's largest-magnitude weight on
that code; *absmax* is that scale alone (finer steps, nothing clipped). For each workload and
uniform 2 / 3 / 4 bits (tiny-lm with its embeddings at 8 bits, as LLM compressors keep them), the
same policy is evaluated under each grid with rtn and with gptq (the grid of each group swapped
in), in one run; the last columns are the ratios absmax / rtn's grid, per quantizer (quality in
the workload's direction: > 1 is better for accuracy, < 1 for perplexity).
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

    default = Q._symmetric_scales

    def positive_only(flat, amax, qmax, b, clip=True):   # rtn's grid (the default)
        for r in (Q._CLIP_RATIOS if b <= 8 else (1.0,)):
            yield amax * r / qmax

    def both(flat, amax, qmax, b, clip=True):            # the clip search over both orientations
        yield from positive_only(flat, amax, qmax, b)
        for r in (Q._CLIP_RATIOS if b <= 8 else (1.0,)):
            yield Q.signed_absmax_scale(flat, b) * r

    def absmax(flat, amax, qmax, b, clip=True):          # the absmax quantizer's, gptq(clip=false)'s
        yield Q.signed_absmax_scale(flat, b)

    grids = (("positive", positive_only), ("both", both), ("absmax", absmax))
    specs = sys.argv[1:] or ["tiny-lm:weight_only", "digits:mixed_precision", "digits-vit:mixed_precision"]
    print("| workload | bits | rtn | rtn both | absmax | gptq | gptq both "
          "| gptq(clip=false) | absmax / rtn | gptq(clip=false) / gptq |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in specs:
        name, space = spec.split(":")
        wl = load_workload(name)
        ctx = prepare(SearchConfig(model=name, space=space, budget="size<=50%"))
        fp32 = copy.deepcopy(wl.model())
        gptq = build_quantizer("gptq")   # its groups' grid is swapped below
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
                        Q._symmetric_scales = default
            cells = [row["rtn", "positive"], row["rtn", "both"], row["rtn", "absmax"],
                     row["gptq", "positive"], row["gptq", "both"], row["gptq", "absmax"]]
            print(f"| {name} ({wl.quality}) | {b} | " + " | ".join(f"{v:.4f}" for v in cells)
                  + f" | {row['rtn', 'absmax'] / row['rtn', 'positive']:.3f}"
                  + f" | {row['gptq', 'absmax'] / row['gptq', 'positive']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
