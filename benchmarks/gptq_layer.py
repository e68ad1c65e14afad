"""GPTQ on single layers: reconstruction error against RTN and a peer GPTQ, and time per shape.

Part 1, quality: a 64x128 linear layer with correlated Gaussian inputs and the trained digits
CNN's ``classifier.1`` (256 -> 128, fed the load_digits calibration images); error
``‖(W − Q)Xᵀ‖`` over the calibration inputs, relative to ``‖WXᵀ‖``. Columns: RTN, ours, Intel
Neural Compressor's GPTQ (the peer that runs on CPU; its own MSE grid search), and the ratios
ours / RTN and ours / peer (below 1: ours is better). The peer column is ``-`` when
``neural_compressor.torch.algorithms.weight_only.gptq`` does not import (it needs ``accelerate``).

Part 2, speed: seconds per layer (weight ``[out, in]``) for 4-bit per channel and group 128,
ours and the peer on the same weight and Hessian, and RTN as the baseline measured in the same
run.

    python benchmarks/gptq_layer.py [--quick]
"""
from __future__ import annotations

import argparse
import time

import torch

from autocomp.policy import Choice
from autocomp.quant import compress_weight
from autocomp.quantizers import collect_stats
from autocomp.quantizers.gptq import gptq_weight


def recon(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> float:
    """``‖(W − Q)Xᵀ‖ / ‖WXᵀ‖`` from ``H = XᵀX / n``."""
    d = (w - q).double()
    num = torch.einsum("ik,kl,il->", d, h.double(), d)
    den = torch.einsum("ik,kl,il->", w.double(), h.double(), w.double())
    return float((num / den).clamp_min(0).sqrt())


def peer_gptq(w: torch.Tensor, h: torch.Tensor, choice: Choice, act_order: bool) -> torch.Tensor | None:
    try:
        from neural_compressor.torch.algorithms.weight_only.gptq import GPTQ
    except ImportError:
        return None
    import logging

    logging.getLogger("neural_compressor").setLevel(logging.ERROR)
    peer = GPTQ(torch.nn.Linear(w.shape[1], w.shape[0], bias=False), w.clone())
    peer.H = h.clone().float()
    peer.quantizer.configure({"bits": int(choice.w_bits), "sym": not choice.zero_point, "perchannel": True,
                              "mse": True, "dtype": "int", "group_size": choice.group or -1,
                              "use_double_quant": False, "double_quant_sym": False, "double_quant_dtype": "int",
                              "double_quant_bits": 8, "double_quant_group_size": 256})
    return peer.fasterquant(w.clone(), blocksize=128, percdamp=0.01, groupsize=choice.group or -1,
                            act_order=act_order, static_groups=act_order and choice.group is not None)[3]


def have_peer() -> bool:
    try:
        from neural_compressor.torch.algorithms.weight_only.gptq import GPTQ  # noqa: F401
    except ImportError:
        return False
    return True


def layers() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 128, generator=g) @ (torch.randn(128, 128, generator=g) / 128**0.5) \
        + 0.2 * torch.randn(4096, 128, generator=g)
    out = [("gauss 64x128", torch.randn(64, 128, generator=g) * 0.05, x.t() @ x / x.shape[0])]
    from autocomp.workload import load_workload

    wl = load_workload("digits")
    model = wl.model()
    st = collect_stats(model, wl.calib, ["classifier.1"], ["hessian"])["classifier.1"]
    out.append(("digits classifier.1 128x256", dict(model.named_modules())["classifier.1"].weight.detach(), st.hessian))
    return out


def quality(bits_list: tuple[int, ...]) -> None:
    print("| layer | bits | variant | RTN | ours | peer | ours/RTN | ours/peer |")
    print("|---|---|---|---|---|---|---|---|")
    for name, w, h in layers():
        for bits in bits_list:
            for group, zp in ((None, False), (None, True), (32, False), (32, True)):
                for ao in (False, True):
                    c = Choice(bits, 32, group=group, zero_point=zp)
                    rtn = recon(w, compress_weight(w, bits, 0.0, group, zp), h)
                    ours = recon(w, gptq_weight(w, h, c, act_order=ao), h)
                    pq = peer_gptq(w, h, c, ao)
                    peer = None if pq is None else recon(w, pq, h)
                    var = f"{'g32' if group else 'ch'} {'asym' if zp else 'sym'}{' act' if ao else ''}"
                    ps = "-" if peer is None else f"{peer:.4f}"
                    pr = "-" if peer is None else f"{ours / peer:.3f}"
                    print(f"| {name} | {bits} | {var} | {rtn:.4f} | {ours:.4f} | {ps} | {ours / rtn:.3f} | {pr} |")


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def speed(shapes: list[tuple[int, int]], repeat: int) -> None:
    print("\n| weight [out, in] | choice | RTN s | ours s | peer s | ours/RTN | ours/peer |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(1)
    for n, k in shapes:
        w = torch.randn(n, k, generator=g)
        x = torch.randn(2 * k, k, generator=g)
        h = x.t() @ x / x.shape[0]
        for c in (Choice(4, 32), Choice(4, 32, group=128)):
            t_rtn = best_of(lambda: compress_weight(w, 4, 0.0, c.group), repeat)
            t_ours = best_of(lambda: gptq_weight(w, h, c), repeat)
            t_peer = best_of(lambda: peer_gptq(w, h, c, False), repeat) if have_peer() else None
            ps = "-" if t_peer is None else f"{t_peer:.3f}"
            pr = "-" if t_peer is None else f"{t_ours / t_peer:.2f}"
            print(f"| {n}x{k} | {c.key} | {t_rtn:.3f} | {t_ours:.3f} | {ps} | {t_ours / t_rtn:.1f} | {pr} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 bits only, one repeat, the 768x768 shape")
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    quality((4,) if a.quick else (2, 3, 4, 8))
    speed([(768, 768)] if a.quick else [(768, 768), (3072, 768), (768, 3072)], 1 if a.quick else 3)


if __name__ == "__main__":
    main()
