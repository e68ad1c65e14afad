"""autocomp's front against NNCF ``compress_weights`` (issue 11, "Evidence"), side by side.

On each workload (default ``tiny-lm`` and ``digits-vit``), in one run:

- NNCF: ``nncf.compress_weights(model, mode=INT4_SYM, group_size=128, ratio=r, dataset=...,
  sensitivity_metric=HESSIAN_INPUT_ACTIVATION)`` for r in 0.25 / 0.5 / 0.75 / 1.0, each plain,
  with ``awq=True, scale_estimation=True``, and with ``all_layers=True`` (plain and AWQ+SE).
  These models' input widths are 32..256, so group 128 does not divide most of them; NNCF's
  default (``group_size_fallback_mode=ERROR``) refuses, and we pass ``ADJUST`` with
  ``min_adjusted_group_size=4`` so that such a layer takes its whole row as one group - which is
  what autocomp's ``g128`` choice does on a row shorter than 128 (one group per row).
- autocomp: ``run_search`` with ``--space weight_only`` and ``--space int4_int8`` (a sweep of
  ``--points`` budgets up to the largest NNCF size, plus the uniform baselines), SQLite study in
  a temp dir.
- Size, the same way for both: the bytes the compressed model holds. NNCF: every distinct tensor
  of the compressed model's state dict (packed int4 / uint8 codes, fp16 scales, uint8 zero points,
  every float parameter left). autocomp: :func:`policy_bytes` of each policy (packed codes + one
  fp16 scale per group or row + packed zero points + every other parameter in fp32); the cost
  model's ``size`` (the checkpoint file: these tensors, buffers and the safetensors header) is
  printed beside it.
- Quality: ``workload.metric(model, workload.eval)`` on both (autocomp's policy re-applied here with
  :func:`autocomp.policy.apply`, the evaluator's own code).

For each NNCF row: autocomp's best policy of size <= that row's size (over both spaces, and per
space), the ratio autocomp / NNCF of the metric, and win/loss in the metric's direction.

``--nncf-backend openvino`` runs NNCF on the OpenVINO form of the same model instead (exported
with ``torch.export``, dynamic batch and sequence so nothing is constant-folded, converted with
``openvino.convert_model``), where NNCF offers everything its torch backend refuses: GPTQ, and AWQ
+ scale estimation on these models. Its configurations are plain, ``awq+se``, ``gptq`` and
``awq+se+gptq``, each with and without ``all_layers``. The OpenVINO model's quality is measured
with the same metric code (logits from the compiled model); its size is the bytes of its
constants minus those the float OpenVINO model holds beyond the torch state dict (index and
shape constants of the graph, the same in both), so both sides count the same tensors.

``--quantizer A,B,...`` runs one study per space and quantizer; each row takes the best policy
of all of them (chosen by the quality the search stored). On ``tiny-lm`` every row is also scored
on its held-out test split, which neither the searches nor NNCF's calibration see
(:func:`autocomp.workloads.tiny_lm.held_out_split`), and counted as a win or a loss there too.
``--nncf-cache FILE`` keeps NNCF's rows (deterministic) between runs.

    python benchmarks/vs_nncf.py [--models tiny-lm digits-vit] [--points 8] [--workers 2]
                                 [--quantizer gptq] [--nncf-backend torch|openvino]
                                 [--nncf-cache FILE] [--no-test]

Needs ``pip install 'autocomp[bench]'`` (nncf; ``openvino`` for ``--nncf-backend openvino``).
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass

import torch

RATIOS = (0.25, 0.5, 0.75, 1.0)
SPACES = ("weight_only", "int4_int8")


def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes of every distinct tensor in ``model``'s state dict (a tied weight counts once)."""
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        if not isinstance(t, torch.Tensor):
            continue
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def policy_bytes(layers, other_params: int, policy) -> float:
    """What a checkpoint of ``policy`` holds: codes packed at their bits, one fp16 scale per group
    (per row when per channel), zero points packed at the code bits, fp32 for the rest."""
    from autocomp.quant import group_count, is_float

    ch = policy.as_dict()
    total = other_params * 4.0
    for l in layers:
        c = ch.get(l.name)
        if c is None or is_float(c.w_bits):
            total += l.params * 4.0
            continue
        rows = l.weight_shape[0] if l.weight_shape else 1
        groups = rows * group_count(l.params // max(rows, 1), c.group)
        total += l.params * c.effective_w_bits / 8.0 + groups * 2.0
        total += groups * float(c.w_bits) / 8.0 if c.zero_point else 0.0
    return total


@dataclass
class Row:
    label: str
    size: float | None
    quality: float | None
    seconds: float
    error: str = ""
    test: float | None = None   # on the held-out test split, where the workload has one


def nncf_rows(wl, fp32_bytes: int, test=None) -> list[Row]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    dataset = nncf.Dataset(wl.calib, lambda batch: batch[0])
    adv = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST,
                                        min_adjusted_group_size=4)
    rows = []
    for all_layers in (False, True):
        for awq in (False, True):
            for r in RATIOS:
                label = f"nncf int4_sym g128 r={r:g}" + (" awq+se" if awq else "") + (" all_layers" if all_layers else "")
                model = copy.deepcopy(wl.model())  # NNCF compresses in place; wl.model() is shared
                t0 = time.perf_counter()
                try:
                    out = nncf.compress_weights(
                        model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=128, ratio=r, dataset=dataset,
                        sensitivity_metric=nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION, all_layers=all_layers,
                        awq=awq, scale_estimation=awq, advanced_parameters=adv)
                    dt = time.perf_counter() - t0
                    rows.append(Row(label, stored_bytes(out), float(wl.metric(out, wl.eval)), dt,
                                    test=_test_metric(wl, out, test)))
                except Exception as e:  # an option the torch CPU backend refuses: report what it said
                    msg = " ".join(str(e).split())[:300]
                    rows.append(Row(label, None, None, time.perf_counter() - t0, f"{type(e).__name__}: {msg}"))
                print(f"  {label}: " + (rows[-1].error or f"{rows[-1].size / fp32_bytes:.2%} of fp32, "
                                        f"{wl.quality} {rows[-1].quality:.4f}, {rows[-1].seconds:.1f}s"), flush=True)
    return rows


class _Logits(torch.nn.Module):
    """The workload model with its output reduced to the logits tensor (for ``torch.export``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        from autocomp.workload import output_tensor

        return output_tensor(self.model(x))


class _Compiled(torch.nn.Module):
    """An OpenVINO model behind the torch call the workload's metric makes."""

    def __init__(self, ov_model):
        import openvino as ov

        super().__init__()
        self.compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def forward(self, x):
        return torch.from_numpy(self.compiled(x.numpy())[0].copy())


def _ov_bytes(ov_model) -> int:
    return sum(op.get_byte_size() for op in ov_model.get_ordered_ops() if op.get_type_name() == "Constant")


def to_openvino(model: torch.nn.Module, example: torch.Tensor):
    """``model`` as an OpenVINO model, batch (and sequence) dimensions dynamic."""
    import openvino as ov

    dims = {0: torch.export.Dim("batch", max=4096)}
    if example.dim() == 2 and not example.dtype.is_floating_point:   # token ids [B, T]
        dims[1] = torch.export.Dim("seq", min=2, max=example.shape[1])
    ep = torch.export.export(_Logits(model).eval(), (example,), dynamic_shapes=(dims,))
    return ov.convert_model(ep)


def nncf_ov_rows(wl, fp32_bytes: int, test=None) -> list[Row]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    x0 = wl.calib[0][0]
    ov_fp32 = to_openvino(copy.deepcopy(wl.model()), x0)
    graph_extra = _ov_bytes(ov_fp32) - fp32_bytes      # constants that are not model tensors
    check = float(wl.metric(_Compiled(ov_fp32), wl.eval))
    print(f"  openvino fp32: {wl.quality} {check:.4f}, graph constants beyond the state dict {graph_extra} B",
          flush=True)
    dataset = nncf.Dataset(wl.calib, lambda batch: batch[0].numpy())
    adv = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST,
                                        min_adjusted_group_size=4)
    variants = (("", {}), (" awq+se", {"awq": True, "scale_estimation": True}), (" gptq", {"gptq": True}),
                (" awq+se+gptq", {"awq": True, "scale_estimation": True, "gptq": True}))
    rows = []
    for all_layers in (False, True):
        for tag, extra in variants:
            for r in RATIOS:
                label = f"nncf-ov int4_sym g128 r={r:g}{tag}" + (" all_layers" if all_layers else "")
                t0 = time.perf_counter()
                try:
                    out = nncf.compress_weights(
                        ov_fp32.clone(), mode=nncf.CompressWeightsMode.INT4_SYM, group_size=128, ratio=r,
                        dataset=dataset, sensitivity_metric=nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION,
                        all_layers=all_layers, advanced_parameters=adv, **extra)
                    dt = time.perf_counter() - t0
                    compiled = _Compiled(out)
                    rows.append(Row(label, _ov_bytes(out) - graph_extra, float(wl.metric(compiled, wl.eval)), dt,
                                    test=_test_metric(wl, compiled, test)))
                except Exception as e:
                    msg = " ".join(str(e).split())[:300]
                    rows.append(Row(label, None, None, time.perf_counter() - t0, f"{type(e).__name__}: {msg}"))
                print(f"  {label}: " + (rows[-1].error or f"{rows[-1].size / fp32_bytes:.2%} of fp32, "
                                        f"{wl.quality} {rows[-1].quality:.4f}, {rows[-1].seconds:.1f}s"), flush=True)
    return rows


def autocomp_points(model: str, budget: str, points: int, workers: int | None, d: str,
                    quantizers: tuple[str, ...] = ("rtn",)):
    """Per (space, quantizer) study: (every evaluated point with its policy, wall seconds, size
    cross-check, search context)."""
    from autocomp.policy import Policy
    from autocomp.report import study_points
    from autocomp.search import SearchConfig, prepare, run_search
    from autocomp.store import Store

    out = {}
    for space, quantizer in [(s, q) for q in quantizers for s in SPACES]:
        key = space if len(quantizers) == 1 else f"{space} {quantizer}"
        store = Store(f"sqlite:///{os.path.join(d, f'study-{len(out)}.db')}")
        cfg = SearchConfig(model=model, budget=budget, space=space, points=points, workers=workers, quantizer=quantizer)
        t0 = time.perf_counter()
        res = run_search(cfg, store, f"vs-nncf-{space.replace('_', '-')}")
        dt = time.perf_counter() - t0
        ctx = prepare(cfg)
        pols = {p.policy_id: Policy.from_dict(p.policy) for p in store.list_policies(res.study)}
        pts = study_points(store, res.study)
        # Sizes are compared by tensor bytes, as NNCF's (the cost model's size also counts the
        # checkpoint's header and buffers): the largest difference of the two is printed.
        for p in pts:
            p["bytes"] = policy_bytes(ctx.layers, ctx.cm.other_params, pols[p["policy_id"]])
        diff = max(abs(ctx.cm.cost("size", pols[p["policy_id"]]) - p["bytes"]) for p in pts)
        out[key] = ([(p, pols[p["policy_id"]]) for p in pts], dt, diff, ctx, quantizer)
    return out


def _load_rows(path: str | None, name: str, backend: str):
    """NNCF's rows of an earlier run of this benchmark (``--nncf-cache``), or None."""
    import json

    if not path or not os.path.exists(path):
        return None
    entry = json.load(open(path)).get(f"{name}/{backend}/nncf-{_nncf_version()}")
    return None if entry is None else ([Row(**r) for r in entry["rows"]], entry["seconds"])


def _save_rows(path: str | None, name: str, backend: str, rows: list, seconds: float) -> None:
    import dataclasses
    import json

    if not path:
        return
    data = json.load(open(path)) if os.path.exists(path) else {}
    data[f"{name}/{backend}/nncf-{_nncf_version()}"] = {"rows": [dataclasses.asdict(r) for r in rows],
                                                       "seconds": seconds}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def _digest(*splits) -> str:
    """A short hash of the token ids / inputs of ``splits`` (lists of batches)."""
    import hashlib

    h = hashlib.sha256()
    for split in splits:
        for batch in split:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for t in (x.values() if isinstance(x, dict) else [x]):   # HF-style dict inputs too
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:12]


def _nncf_version() -> str:
    import nncf

    return nncf.__version__


def compare(name: str, points: int, workers: int | None, quantizers: tuple[str, ...] = ("rtn",),
            backend: str = "torch", nncf_cache: str | None = None, test_split: bool = True) -> None:
    from autocomp.metrics import get_quality_metric
    from autocomp.policy import apply
    from autocomp.workload import load_workload

    wl = load_workload(name)
    qm = get_quality_metric(wl.quality)
    fp32 = copy.deepcopy(wl.model())
    fp32_bytes, fp32_q = stored_bytes(fp32), float(wl.metric(fp32, wl.eval))
    test = held_out(name) if test_split else None
    print(f"\n== {name}: fp32 {fp32_bytes} B, {wl.quality} {fp32_q:.4f} "
          f"({'higher' if qm.higher_is_better else 'lower'} is better)"
          + (f"; held-out test split {sum(int(b[0].numel()) for b in test)} tokens, fp32 "
             f"{_test_metric(wl, fp32, test):.4f}" if test is not None else ""), flush=True)
    t0 = time.perf_counter()
    tag = f"{backend}-{_digest(wl.calib, wl.eval, test or [])}"   # rows of other splits are not reused
    cached = _load_rows(nncf_cache, name, tag)
    if cached is not None:
        nrows, t_nncf = cached
        print(f"  NNCF rows read from {nncf_cache} (measured {t_nncf:.1f}s when they were run)")
    else:
        nrows = nncf_ov_rows(wl, fp32_bytes, test) if backend == "openvino" else nncf_rows(wl, fp32_bytes, test)
        t_nncf = time.perf_counter() - t0
        _save_rows(nncf_cache, name, tag, nrows, t_nncf)
    ok = [r for r in nrows if r.size is not None]
    top = max((r.size for r in ok), default=0.3 * fp32_bytes)
    budget = f"size<={math.ceil(top * 1.01)}B"
    with tempfile.TemporaryDirectory() as d:
        found = autocomp_points(name, budget, points, workers, d, quantizers)
    ctx = next(iter(found.values()))[3]
    print(f"  fp32 bytes: state dict {fp32_bytes}, autocomp cost model {ctx.cm.fp32('size'):.0f}")
    for key, (_, dt, diff, _, _) in found.items():
        print(f"  autocomp {key}: {len(found[key][0])} policies evaluated, {dt:.1f}s wall "
              f"(budget {budget}), cost-model size vs policy_bytes: max |diff| {diff:.1f} B")

    evaluated: dict[tuple[str, str], tuple[float, float | None]] = {}
    built: dict[str, tuple] = {}

    def requality(pt, pol, quantizer) -> tuple[float, float | None]:
        # The same code as for NNCF's model; the stored value came from the evaluator actor. Under
        # another quantizer than rtn the policy's weights are that quantizer's: rebuilt with it.
        if (quantizer, pol.id) not in evaluated:
            if quantizer == "rtn":
                model = apply(fp32, pol)
            else:
                if quantizer not in built:
                    from autocomp.calibrate import activation_ranges, activation_stats
                    from autocomp.evaluators.ptq import ACT_BITS, build_quantizer
                    from autocomp.modules import activation_layers
                    from autocomp.quantizers import collect_stats

                    quant = build_quantizer(quantizer)
                    names = [n for n, _ in activation_layers(fp32)]
                    ranges = activation_ranges(activation_stats(fp32, names, wl.calib), ACT_BITS)
                    built[quantizer] = quant, ranges, collect_stats(fp32, wl.calib, names, quant.needs)
                quant, ranges, stats = built[quantizer]
                model = quant.apply(fp32, pol, ranges, stats, batches=wl.calib)
            evaluated[quantizer, pol.id] = float(wl.metric(model, wl.eval)), _test_metric(wl, model, test)
        return evaluated[quantizer, pol.id]

    def best(cands, size):
        # chosen by the quality the search stored (its own evaluation split), never by the test split
        fits = [c for c in cands if c[0]["bytes"] <= size * (1 + 1e-9)]
        return min(fits, key=lambda c: qm.key(c[0]["quality"])) if fits else None

    every = [(key, pt, pol) for key, (pts, *_rest) in found.items() for pt, pol in pts]
    quant_of = {key: v[4] for key, v in found.items()}
    q = wl.quality
    cols = f"| NNCF configuration | size | {q} |"
    if test is not None:
        cols += f" {q} (test) |"
    cols += f" autocomp best at <= that size | size | {q} |"
    if test is not None:
        cols += f" {q} (test) |"
    cols += " result |" + (" result (test) |" if test is not None else "")
    print("\n" + cols + "\n|" + "---|" * (cols.count("|") - 1))
    wins = losses = test_wins = test_losses = 0
    per_study: list[str] = []
    for r in nrows:
        if r.size is None:
            print(f"| {r.label} | did not run: {r.error} |")
            continue
        b = best([(pt, pol, space) for space, pt, pol in every], r.size)
        head = f"| {r.label} | {r.size / fp32_bytes:.2%} | {r.quality:.4f} |"
        if test is not None:
            head += f" {r.test:.4f} |"
        if b is None:
            losses += 1
            test_losses += test is not None
            print(head + " no autocomp policy this small | | | **LOSS** |")
            continue
        pt, pol, space = b
        qe, qt = requality(pt, pol, quant_of[space])
        win = qm.no_worse(qe, r.quality)
        wins, losses = wins + win, losses + (not win)
        row = head + f" {space}, {pt['label'] or pt['source']} | {pt['bytes'] / fp32_bytes:.2%} | {qe:.4f} |"
        if test is not None:
            row += f" {qt:.4f} |"
        row += f" {'win' if win else '**LOSS**'} |"
        if test is not None:
            twin = qm.no_worse(qt, r.test)
            test_wins, test_losses = test_wins + twin, test_losses + (not twin)
            row += f" {'win' if twin else '**LOSS**'} |"
        print(row)
        for sp in found:  # the same row, per study
            bs = best([(p, po, s) for s, p, po in every if s == sp], r.size)
            if bs is not None:
                qs = requality(*bs[:2], quant_of[sp])[0]
                per_study.append(f"  {r.label:<48} only {sp:<30} {bs[0]['bytes'] / fp32_bytes:7.2%} "
                                 f"{qs:10.4f} {'win' if qm.no_worse(qs, r.quality) else 'LOSS'}")
    print("\n  per study (its best at <= each NNCF size, on the evaluation split):\n" + "\n".join(per_study))
    stored_vs_here = max((abs(evaluated[quant_of[k], pol.id][0] - pt["quality"]) for k, pt, pol in every
                          if (quant_of[k], pol.id) in evaluated), default=0.0)
    t_auto = sum(v[1] for v in found.values())
    print(f"\n  {name}: {wins} wins, {losses} losses of {wins + losses} NNCF points on the evaluation split"
          + (f"; {test_wins} wins, {test_losses} losses on the held-out test split" if test is not None else "")
          + f"; stored vs re-evaluated quality max |diff| {stored_vs_here:.2e}")
    print(f"  wall: NNCF all {len(nrows)} configurations {t_nncf:.1f}s "
          f"(mean {t_nncf / max(len(nrows), 1):.1f}s each); autocomp's {len(found)} searches {t_auto:.1f}s "
          f"-> autocomp / NNCF-all {t_auto / t_nncf:.2f}x")


def held_out(name: str):
    """A test split no search or calibration sees, where the workload has the data for one:
    ``tiny-lm``'s :func:`~autocomp.workloads.tiny_lm.held_out_split` (512 validation blocks, none of
    them an evaluation block). None for the others (digits' images are all in its training,
    calibration or evaluation split)."""
    if name != "tiny-lm":
        return None
    from autocomp.workloads.tiny_lm import held_out_split

    return held_out_split()


def _test_metric(wl, model, test) -> float | None:
    return None if test is None else float(wl.metric(model, test))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny-lm", "digits-vit"])
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--quantizer", default="rtn",
                    help="autocomp's quantizer (autocomp search --quantizer); several, comma-separated "
                         "(rtn,absmax): one study per space and quantizer, the best of all per row")
    ap.add_argument("--nncf-backend", choices=("torch", "openvino"), default="torch",
                    help="run NNCF on the torch model or on its OpenVINO form (GPTQ, AWQ + SE)")
    ap.add_argument("--nncf-cache", default=None,
                    help="JSON file: NNCF's rows are read from it when it holds this model, backend and "
                         "NNCF version, else measured and written to it (NNCF's results are deterministic)")
    ap.add_argument("--no-test", action="store_true",
                    help="tiny-lm: do not score the rows on its held-out test split")
    args = ap.parse_args()
    try:
        import nncf
    except ImportError:
        raise SystemExit("error: this benchmark needs NNCF: pip install 'autocomp[bench]'") from None
    nncf.set_log_level(logging.ERROR)  # its per-call bit-width tables
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, nncf {nncf.__version__}, threads {torch.get_num_threads()}")
    for name in args.models:
        compare(name, args.points, args.workers, tuple(_split(args.quantizer)), args.nncf_backend, args.nncf_cache,
                not args.no_test)


def _split(spec: str) -> list[str]:
    """Comma-separated quantizer specs; commas inside parentheses belong to a spec's options."""
    out, depth, cur = [], 0, ""
    for ch in spec:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [q for q in out + [cur.strip()] if q]


if __name__ == "__main__":
    main()
