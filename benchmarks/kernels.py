"""Low-bit kernels against float on the same device, measured in the same run.

CPU (always): the int8 path (FBGEMM linear / oneDNN conv) against fp32, per layer of the
digits workload, on large Linear shapes, and for whole digits models (uniform w8a8 / w4a8).
GPU (when CUDA is present, or --gpu): int4, ternary (2-bit words), binary and W8A8 Triton GEMMs
at M = 1, 16, 128 and N = K = 4096 against ``torch.matmul`` in fp16.

Each line prints the baseline time, the kernel time and their ratio (speed-up > 1 is faster).

    python benchmarks/kernels.py [--threads 1] [--repeats 30] [--gpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from autocomp.kernels.timing import measure_pair


def _row(rows: list, kind: str, what: str, base: float, new: float, **extra) -> None:
    r = {"kind": kind, "what": what, "baseline_ms": base * 1e3, "kernel_ms": new * 1e3, "speedup": base / new, **extra}
    rows.append(r)
    print(f"{kind:10s} {what:44s} base {base * 1e3:9.4f} ms  kernel {new * 1e3:9.4f} ms  x{base / new:5.2f}", flush=True)


def cpu_bench(rows: list, repeats: int) -> None:
    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.kernels import convert
    from autocomp.kernels.cpu import has_vnni
    from autocomp.kernels.modules import QuantLinear
    from autocomp.policy import Choice, Policy
    from autocomp.modules import call_model, quantizable_layers
    from autocomp.workload import load_workload

    dev = torch.device("cpu")
    print(f"# CPU: {platform.processor() or platform.machine()}, threads={torch.get_num_threads()}, vnni={has_vnni()}")
    wl = load_workload("digits")
    m = wl.model()
    names = [n for n, _ in quantizable_layers(m)]
    ranges = activation_ranges(activation_stats(m, names, wl.calib), (4, 8))
    x = wl.eval[0][0]
    inputs: dict = {}
    mods = dict(m.named_modules())
    hs = [mods[n].register_forward_pre_hook(lambda mod, a, n=n: inputs.setdefault(n, a[0])) for n in names]
    with torch.no_grad():
        m(x)
    for h in hs:
        h.remove()
    for ch in (Choice(8, 8), Choice(4, 8)):
        for n in names:
            holder = torch.nn.Module()
            holder.add_module("m", mods[n])
            k = convert(holder, Policy.from_choices({"m": ch}), {"m": ranges[n]}).m
            xin = inputs[n]
            b, t = measure_pair(lambda: mods[n](xin), lambda: k(xin), dev, repeats)
            _row(rows, "cpu-layer", f"digits {n} {tuple(xin.shape)} {ch.key}", b, t)
        pol = Policy.uniform(names, ch)
        km = convert(m, pol, ranges)
        b, t = measure_pair(lambda: call_model(m, x), lambda: call_model(km, x), dev, repeats)
        _row(rows, "cpu-model", f"digits batch {x.shape[0]} uniform {ch.key}", b, t)
    g = torch.Generator().manual_seed(0)
    for mm, kk, nn in ((1, 4096, 4096), (16, 4096, 4096), (128, 4096, 4096), (128, 1024, 1024)):
        lin = torch.nn.Linear(kk, nn)
        xin = torch.randn(mm, kk, generator=g).relu()
        for ch in (Choice(8, 8), Choice(4, 8), Choice(4, 7)):
            q = QuantLinear.from_float(lin, ch, (0.0, float(xin.max())))
            b, t = measure_pair(lambda: lin(xin), lambda: q(xin), dev, max(5, repeats // 3))
            _row(rows, "cpu-linear", f"M={mm} K={kk} N={nn} {ch.key}", b, t)


def gpu_bench(rows: list, repeats: int) -> None:
    from autocomp.kernels import triton_kernels as tk
    from autocomp.kernels.packing import code_range, pack

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    print(f"# GPU: {name}, torch {torch.__version__}")
    g = torch.Generator().manual_seed(0)
    n = k = 4096
    w16 = (torch.randn(n, k, generator=g) / 64).half().to(dev)
    for bits, label in ((4, "int4"), (2, "ternary"), (1, "binary")):
        lo, hi = code_range(bits)
        if bits == 1:
            codes = torch.randint(0, 2, (n, k), generator=g) * 2 - 1
        elif bits == 2:
            codes = torch.randint(-1, 2, (n, k), generator=g)
        else:
            codes = torch.randint(lo, hi + 1, (n, k), generator=g)
        packed = pack(codes.t(), bits, dim=0).to(dev)
        scale = (torch.rand(n, generator=g) / 64).to(dev)
        for mm in (1, 16, 128):
            x = torch.randn(mm, k, generator=g).half().to(dev)
            b, t = measure_pair(lambda: torch.matmul(x, w16.t()), lambda: tk.wq_matmul(x, packed, scale, bits, k),
                                dev, repeats)
            _row(rows, "gpu", f"{label} x fp16 M={mm} N=K=4096 ({name})", b, t, device=name)
            if mm == 1:
                b, t = measure_pair(lambda: torch.matmul(x, w16.t()),
                                    lambda: tk.wq_matmul(x, packed, scale, bits, k, block_n=128, block_k=128, gemv=True),
                                    dev, repeats)
                _row(rows, "gpu", f"{label} x fp16 M=1 N=K=4096 gemv ({name})", b, t, device=name)
    # Block sizes were chosen without a GPU: time a small sweep for int4 at M = 1 and 16 so one
    # run says which configuration to make the default.
    codes = torch.randint(-8, 8, (n, k), generator=g)
    packed = pack(codes.t(), 4, dim=0).to(dev)
    scale = (torch.rand(n, generator=g) / 64).to(dev)
    for mm in (1, 16):
        x = torch.randn(mm, k, generator=g).half().to(dev)
        for gemv in ((False, True) if mm == 1 else (False,)):
            for bn in (64, 128):
                for bk in (64, 128, 256):
                    for sk in (None, 4):
                        b, t = measure_pair(
                            lambda: torch.matmul(x, w16.t()),
                            lambda: tk.wq_matmul(x, packed, scale, 4, k, block_n=bn, block_k=bk, split_k=sk, gemv=gemv),
                            dev, max(10, repeats // 3))
                        _row(rows, "gpu-sweep", f"int4 M={mm} {'gemv' if gemv else 'dot'} block_n={bn} "
                             f"block_k={bk} split_k={sk}", b, t, device=name)
    wt = torch.randint(-127, 128, (k, n), generator=g, dtype=torch.int8).to(dev)
    colsum = wt.int().sum(0).int()
    ws = (torch.rand(n, generator=g) / 100).to(dev)
    for mm in (1, 16, 128):
        xq = torch.randint(-128, 128, (mm, k), generator=g, dtype=torch.int8).to(dev)
        x = torch.randn(mm, k, generator=g).half().to(dev)
        b, t = measure_pair(lambda: torch.matmul(x, w16.t()), lambda: tk.w8a8_matmul(xq, 0.02, 3, wt, colsum, ws),
                            dev, repeats)
        _row(rows, "gpu", f"w8a8 int8 M={mm} N=K=4096 ({name})", b, t, device=name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: comparable on a shared machine)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--gpu", action="store_true", help="GPU part only (fails without CUDA)")
    ap.add_argument("--json", help="write every row here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows: list = []
    if a.gpu:
        if not torch.cuda.is_available():
            print("no CUDA device", file=sys.stderr)
            return 2
        gpu_bench(rows, a.repeats)
    else:
        cpu_bench(rows, a.repeats)
        if torch.cuda.is_available():
            gpu_bench(rows, a.repeats)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
