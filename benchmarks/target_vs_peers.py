"""``--target 'drop<=1%'`` against the cheapest uniform policy and peers' accuracy-driven tuning.

For each workload (``digits``, ``digits-vit``, ``tiny-lm``; a higher-is-better metric gets
``drop<=1%``, perplexity gets ``perplexity<=+5%``) it runs, side by side on the same float model
and evaluation data:

- autocomp: :func:`autocomp.search.run_search` with ``SearchConfig(target=...)`` (default space
  ``mixed_precision``: weights 2-8 bits per layer, activations 8 bits; default budget
  ``size<=25%`` as the upper bound), SQLite in a temp dir. Evaluations = the PTQ evaluations the
  search made (fp32 reference + probes); the proxy's per-layer-per-choice measurements on
  calibration data are listed apart.
- uniform (the baseline, measured in the same run): every layer at one choice of the space, from
  the cheapest up, each scored with the ``ptq`` evaluator in this process, stopping at the first
  that meets the target (fp32 reference counted).
- INC weight-only: Intel Neural Compressor 3.x ``autotune`` with RTN configs at 2, 3, 4, 8 bits
  (per channel, symmetric, the same order: cheapest first) and ``tolerable_loss``; INC's RTN
  quantizes ``Linear`` layers only (not convolutions, not the LM head) and keeps activations float.
- INC static INT8: ``autotune`` with ``StaticQuantConfig()`` on the model exported by
  ``neural_compressor.torch.export.export`` (PT2E, X86 quantizer: INT8 weights and activations).
- NNCF ``quantize_with_accuracy_control``: nncf 3.4 implements it for OpenVINO and ONNX models
  only (a torch model raises ``UnsupportedBackendError``, recorded in the row), so the float model
  is exported to ONNX (TorchScript exporter) and tuned there (INT8 QDQ, ``DropType.RELATIVE``),
  each candidate scored by the workload's own metric on ONNX Runtime.

INC's ``tolerable_loss`` is relative on a higher-is-better score; for perplexity the tuner sees
``1 / perplexity`` with ``tolerable_loss = 1 - 1 / 1.05``, which is exactly ``perplexity<=+5%``.

Size is computed the same way for every row ("stored bytes"): each quantized weight at its bits
(pruned weights dropped), one fp16 scale per output channel (or per group), every other
parameter in fp32. autocomp's own ``size`` metric (which counts no per-channel scale) is printed
beside it for autocomp's answer.

    python benchmarks/target_vs_peers.py [--models digits digits-vit tiny-lm] [--max-evals 12]

Needs the ``bench`` extra (neural-compressor-pt, torchao, ...) for the peer rows; a peer that is
missing or fails prints its one-line error in its row and the others still run.
"""
from __future__ import annotations

import argparse
import copy
import functools
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

SCALE_BYTES = 2  # one fp16 scale per output channel or group, for every scheme


def stored_bytes(layers: list, quantized: dict[str, tuple[float, float, int | None]], total_params: int) -> float:
    """Bytes a checkpoint stores: ``quantized`` maps a layer name to (bits, prune, group)."""
    total, qparams = 0.0, 0
    for l in layers:
        if l.name not in quantized:
            continue
        bits, prune, group = quantized[l.name]
        if bits >= 32:
            continue
        rows = l.weight_shape[0] if l.weight_shape else 1
        k = l.params // max(rows, 1)
        scales = rows * (math.ceil(k / group) if group else 1)
        total += l.params * bits * (1.0 - prune) / 8.0 + scales * SCALE_BYTES
        qparams += l.params
    return total + (total_params - qparams) * 4.0


def policy_bits(policy) -> dict[str, tuple[float, float, int | None]]:
    return {n: (float(c.w_bits), float(c.prune), c.group) for n, c in policy.as_dict().items()}


class Counter:
    """Counts and records the evaluations a peer's tuner asks for."""

    def __init__(self, fn: Callable[[torch.nn.Module], float]):
        self.fn, self.values = fn, []

    def __call__(self, model: torch.nn.Module) -> float:
        if isinstance(model, torch.fx.GraphModule):  # PT2E models refuse .eval() unless allowed
            from torchao.quantization.pt2e import allow_exported_model_train_eval

            allow_exported_model_train_eval(model)
        v = float(self.fn(model))
        self.values.append(v)
        return v


def _row(method: str, evals: Any, size: float | None, quality: float | None, seconds: float, note: str = "",
         extra: str = "") -> dict[str, Any]:
    return {"method": method, "evals": evals, "size": size, "quality": quality, "seconds": seconds,
            "note": note, "extra": extra}


def run_autocomp(model: str, target: str, max_evals: int, store, ctx, total_params: int) -> dict[str, Any]:
    from autocomp.policy import Policy
    from autocomp.search import SearchConfig, run_search

    t0 = time.perf_counter()
    res = run_search(SearchConfig(model=model, target=target, max_evals=max_evals, workers=2), store, model)
    secs = time.perf_counter() - t0
    ans = res.target["answer"]
    pols = {p.policy_id: p for p in store.list_policies(res.study)}
    pol = Policy.from_dict(pols[ans["policy_id"]].policy)
    bits = sorted({float(c.w_bits) for c in pol.as_dict().values()})
    layers = list(ctx.layers)
    # loss_delta's cost besides the evaluations: one calibration pass per (layer, choice)
    proxy = sum(len(c) for c in ctx.space.choices(layers).values())
    fail = res.target["bracket"]["fail"]
    fail_text = f"fail side {fail['cost']:.0f} B at {fail['quality']:.4f}" if fail else "no failing probe below"
    extra = (f"+{proxy} proxy calibration passes; autocomp size metric {ans['cost']:.0f} B; bits used {bits}; "
             f"bracket {fail_text}")
    return _row("autocomp --target", res.evaluated_now, stored_bytes(layers, policy_bits(pol), total_params),
                ans["quality"], secs, f"stopped: {res.target['stopped']}", extra)


def run_uniform(wl, ctx, target, reference: float, total_params: int) -> dict[str, Any]:
    from autocomp.evaluators import get_evaluator
    from autocomp.policy import Policy

    t0 = time.perf_counter()
    ev = get_evaluator("ptq")
    ev.setup(wl)
    evals = 1  # the fp32 reference, as every other row counts it
    choices = ctx.space.choices(list(ctx.layers))
    # uniform in weight bits: a layer's allowed choices may differ in the rest (an embedding's
    # input ids take no activation bits), so each layer takes its own choice at those bits
    widths = sorted({c.w_bits for n in ctx.names for c in choices[n]})
    uniform = [Policy.from_choices([(n, next(c for c in choices[n] if c.w_bits == w)) for n in ctx.names])
               for w in widths if all(any(c.w_bits == w for c in choices[n]) for n in ctx.names)]
    uniform.sort(key=lambda p: ctx.cm.cost("size", p))
    for pol in uniform:
        c = pol[ctx.names[-1]]
        q = ev.evaluate(wl, pol).quality
        evals += 1
        if target.met(q, reference, ctx.quality):
            return _row("uniform (cheapest meeting)", evals, stored_bytes(list(ctx.layers), policy_bits(pol), total_params),
                        q, time.perf_counter() - t0, f"W{c.w_bits:g}A{c.a_bits}")
    return _row("uniform (cheapest meeting)", evals, None, None, time.perf_counter() - t0, "no uniform policy meets it")


def _inc_tolerance(quality: str, value: float) -> tuple[float, Callable[[float], float]]:
    """INC's tolerable_loss and the score it maximises for a relative target of ``value``."""
    from autocomp.metrics import get_quality_metric

    if get_quality_metric(quality).higher_is_better:
        return value, lambda q: q
    return 1.0 - 1.0 / (1.0 + value), lambda q: 1.0 / q


def run_inc_woq(wl, layers, total_params: int, quality: str, rel: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        from neural_compressor.torch.quantization import RTNConfig, TuningConfig, autotune
    except ImportError as e:
        return _row("INC autotune RTN (weight-only)", "-", None, None, 0.0, f"not installed: {e}")
    tol, score = _inc_tolerance(quality, rel)
    count = Counter(lambda m: score(wl.evaluate(m)))
    # use_layer_wise=False: INC's layer-wise mode loads weights from disk through accelerate
    configs = [RTNConfig(bits=b, group_size=-1, use_sym=True, use_layer_wise=False) for b in (2, 3, 4, 8)]
    try:
        q = autotune(copy.deepcopy(wl.model()), TuningConfig(config_set=configs, tolerable_loss=tol), eval_fn=count)
    except Exception as e:  # a peer failing on this torch / CPU is a result to report
        return _row("INC autotune RTN (weight-only)", len(count.values), None, None, time.perf_counter() - t0,
                    f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    secs = time.perf_counter() - t0
    quant = {n: (float(m.bits), 0.0, None if m.group_size in (-1, None) else int(m.group_size))
             for n, m in q.named_modules() if type(m).__name__ == "INCWeightOnlyLinear"}
    met = any(v >= count.values[0] * (1 - tol) for v in count.values[1:])
    qv = wl.evaluate(q)
    return _row("INC autotune RTN (weight-only)", len(count.values), stored_bytes(layers, quant, total_params), qv,
                secs, f"{len(quant)}/{len(layers)} layers W{sorted({b for b, _, _ in quant.values()})}"
                + ("" if met else "; no config met the tolerance (best returned)"))


def run_inc_static(wl, layers, total_params: int, quality: str, rel: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        from neural_compressor.torch.export import export
        from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune
    except ImportError as e:
        return _row("INC autotune static INT8", "-", None, None, 0.0, f"not installed: {e}")
    tol, score = _inc_tolerance(quality, rel)
    count = Counter(lambda m: score(wl.evaluate(m)))
    ex = wl.calib[0][0]
    ex = ex if isinstance(ex, tuple) else (ex,)

    def run_fn(model: torch.nn.Module) -> None:
        with torch.no_grad():
            for x, _ in wl.calib:
                model(*(x if isinstance(x, tuple) else (x,)))

    try:
        batch = torch.export.Dim("batch", min=2, max=4096)  # calibration and evaluation batches differ
        em = export(copy.deepcopy(wl.model()), example_inputs=ex, dynamic_shapes=tuple({0: batch} for _ in ex))
        q = autotune(em, TuningConfig(config_set=[StaticQuantConfig()], tolerable_loss=tol), eval_fn=count,
                     run_fn=run_fn, example_inputs=ex)
    except Exception as e:
        return _row("INC autotune static INT8", len(count.values), None, None, time.perf_counter() - t0,
                    f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}")
    secs = time.perf_counter() - t0
    quant = _pt2e_weights(q, layers)
    met = count.values[-1] >= count.values[0] * (1 - tol)
    qv = float(Counter(wl.evaluate)(q))
    return _row("INC autotune static INT8", len(count.values), stored_bytes(layers, quant, total_params), qv, secs,
                f"{len(quant)}/{len(layers)} layers W8A8" + ("" if met else "; missed the tolerance (best returned)"))


def _pt2e_weights(gm: torch.fx.GraphModule, layers) -> dict[str, tuple[float, float, int | None]]:
    """The layers whose weight a PT2E graph quantizes, matched to the profile by weight shape."""
    shapes: list[tuple[int, ...]] = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and ".quantize_per_channel" in str(node.target):
            src = node.args[0]
            if getattr(src, "op", "") == "get_attr":
                shapes.append(tuple(functools.reduce(getattr, src.target.split("."), gm).shape))
    for name, t in list(gm.state_dict().items()):
        if t.dtype in (torch.int8, torch.uint8) and t.dim() >= 2:
            shapes.append(tuple(t.shape))
    return _match_shapes(layers, shapes)


def _match_shapes(layers, shapes: list[tuple[int, ...]]) -> dict[str, tuple[float, float, int | None]]:
    """INT8 weights matched to profiled layers by shape (a MatMul stores a Linear's transposed)."""
    quant, free = {}, list(shapes)
    for l in layers:
        for shape in (tuple(l.weight_shape), tuple(reversed(l.weight_shape))):
            if shape in free:
                free.remove(shape)
                quant[l.name] = (8.0, 0.0, None)
                break
    return quant


class OrtModule(torch.nn.Module):
    """An ONNX Runtime session behind ``forward``, so the workload's own metric scores it."""

    def __init__(self, model: Any):
        super().__init__()
        import onnxruntime as ort

        self.sess = model if isinstance(model, ort.InferenceSession) else ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.sess.run(None, {self.input: x.numpy()})[0])


def run_nncf(wl, layers, total_params: int, quality: str, rel: float) -> dict[str, Any]:
    """NNCF's accuracy control through ONNX: nncf 3.4 has it for OpenVINO and ONNX models only."""
    name = "NNCF quantize_with_accuracy_control (ONNX)"
    t0 = time.perf_counter()
    try:
        import io

        import nncf
        import onnx
    except ImportError as e:
        return _row(name, "-", None, None, 0.0, f"not installed: {e}")
    try:  # the torch model itself, as the API is documented for torch too: record how it refuses
        nncf.quantize_with_accuracy_control(copy.deepcopy(wl.model()), nncf.Dataset([x for x, _ in wl.calib]),
                                            nncf.Dataset([x for x, _ in wl.eval]), validation_fn=lambda m, d: 0.0)
        torch_note = "torch model accepted"
    except Exception as e:
        torch_note = f"torch model: {type(e).__name__}"
    tol, score = _inc_tolerance(quality, rel)
    calls: list[float] = []

    def validate(model: Any, data: Any) -> float:
        items = list(data)
        batches = [b for b in wl.eval if any(b[0] is x for x in items)] or list(wl.eval)
        v = score(float(wl.metric(OrtModule(model), batches)))
        calls.append(v)
        return v

    try:
        buf = io.BytesIO()
        x = wl.calib[0][0]
        # the TorchScript exporter: the torch.export-based one needs onnxscript, not installed here
        torch.onnx.export(copy.deepcopy(wl.model()), (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
        fp32 = onnx.load_from_string(buf.getvalue())
        q = nncf.quantize_with_accuracy_control(
            fp32, nncf.Dataset([b[0].numpy() for b in wl.calib], lambda a: {"x": a}),
            nncf.Dataset([b[0] for b in wl.eval]), validation_fn=validate, max_drop=tol,
            drop_type=nncf.DropType.RELATIVE)
    except Exception as e:
        return _row(name, len(calls), None, None, time.perf_counter() - t0,
                    f"{torch_note}; ONNX failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}")
    secs = time.perf_counter() - t0
    shapes = [tuple(onnx.numpy_helper.to_array(t).shape) for t in q.graph.initializer
              if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(t.dims) >= 2]
    qv = float(wl.metric(OrtModule(q), list(wl.eval)))
    quant = _match_shapes(layers, shapes)
    return _row(name, len(calls), stored_bytes(layers, quant, total_params), qv, secs,
                f"{torch_note}; {len(quant)}/{len(layers)} layers W8A8 left quantized")


def bench(model: str, max_evals: int, store, peers: list[str]) -> list[dict[str, Any]]:
    from autocomp.metrics import get_quality_metric
    from autocomp.profile import model_param_count
    from autocomp.search import SearchConfig, prepare
    from autocomp.target import parse_target
    from autocomp.workload import load_workload

    ctx = prepare(SearchConfig(model=model))
    text = "drop<=1%" if get_quality_metric(ctx.quality).higher_is_better else f"{ctx.quality}<=+5%"
    target = parse_target(text)
    wl = load_workload(model)
    layers, total = list(ctx.layers), model_param_count(wl.model())
    t0 = time.perf_counter()
    reference = wl.evaluate(wl.model())
    rows = [_row("fp32", 1, stored_bytes(layers, {}, total), reference, time.perf_counter() - t0)]
    rows.append(run_autocomp(model, text, max_evals, store, ctx, total))
    rows.append(run_uniform(wl, ctx, target, reference, total))
    if "inc" in peers:
        rows.append(run_inc_woq(wl, layers, total, ctx.quality, target.value))
        rows.append(run_inc_static(wl, layers, total, ctx.quality, target.value))
    if "nncf" in peers:
        rows.append(run_nncf(wl, layers, total, ctx.quality, target.value))
    for r in rows:
        r.update(model=model, target=text, reference=reference, fp32_size=rows[0]["size"],
                 met=None if r["quality"] is None else target.met(r["quality"], reference, ctx.quality))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits", "digits-vit", "tiny-lm"])
    ap.add_argument("--max-evals", type=int, default=12)
    ap.add_argument("--peers", nargs="*", default=["inc", "nncf"])
    args = ap.parse_args()

    import ray

    from autocomp.store import Store

    try:  # INC binds `transformers` at its own import only if it is loaded already (else NameError later)
        import transformers  # noqa: F401
    except ImportError:
        pass
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        store = Store(f"sqlite:///{Path(d) / 'bench.db'}")
        for model in args.models:
            try:
                rows = bench(model, args.max_evals, store, args.peers)
            except Exception as e:
                print(f"{model}: failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}", flush=True)
                continue
            _print(rows)
    ray.shutdown()


def _print(rows: list[dict[str, Any]]) -> None:
    r0 = rows[0]
    print(f"\n## {r0['model']}  target {r0['target']}  (fp32 {r0['reference']:.4f}, {r0['fp32_size']:.0f} B)")
    print("| method | evaluations | stored bytes | % of fp32 | ratio to uniform | metric | vs fp32 | meets | wall s | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    uni = next((r["size"] for r in rows if r["method"].startswith("uniform")), None)
    for r in rows:
        size = "-" if r["size"] is None else f"{r['size']:.0f}"
        pct = "-" if r["size"] is None else f"{100 * r['size'] / r['fp32_size']:.1f}"
        ratio = "-" if r["size"] is None or not uni else f"{r['size'] / uni:.3f}"
        q = "-" if r["quality"] is None else f"{r['quality']:.4f}"
        dv = "-" if r["quality"] is None else f"{100 * (r['quality'] - r['reference']) / abs(r['reference']):+.2f}%"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "no")
        note = "; ".join(x for x in (r["note"], r["extra"]) if x)
        print(f"| {r['method']} | {r['evals']} | {size} | {pct} | {ratio} | {q} | {dv} | {met} | {r['seconds']:.1f} | {note} |",
              flush=True)


if __name__ == "__main__":
    main()
