"""The ONNX export on real onnxruntime: digits (CNN) and a tiny BERT encoder, with per-channel,
block (group-wise), asymmetric, pruned, binary, ternary and sub-8-bit activation layers."""
from __future__ import annotations

import json

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.errors import AutocompError
from autocomp.export import export_format
from autocomp.export import onnx_export
from autocomp.export.onnx_export import MODEL, REPORT, TOLERANCE, export_onnx
from autocomp.modules import activation_layers, call_model, quantizable_layers
from autocomp.policy import Choice, Policy
from autocomp.workload import load_workload, output_tensor

CYCLE = [Choice(8, 8), Choice(4, 32, group=16), Choice(2, 4), Choice(4, 8, group=16, zero_point=True),
         Choice(1.58, 32), Choice(8, 8, prune=0.5), Choice(3, 6), Choice(1, 32), Choice(6, 8, prune=0.3, zero_point=True)]


def _setup(spec: str):
    wl = load_workload(spec)
    model = wl.model()
    names = [n for n, _ in quantizable_layers(model)]
    policy = Policy.from_choices([(n, CYCLE[i % len(CYCLE)]) for i, n in enumerate(names)])
    ranges = activation_ranges(activation_stats(model, [n for n, _ in activation_layers(model)], wl.calib),
                               (2, 3, 4, 5, 6, 7, 8, 16))
    return wl, model, policy, ranges


@pytest.mark.parametrize("spec", ["digits", "autocomp.testing.hf:tiny_bert"])
def test_round_trip_on_onnxruntime(spec, tmp_path):
    wl, model, policy, ranges = _setup(spec)
    rep = export_onnx(model, policy, wl.sample_input(), tmp_path, ranges)
    assert json.loads((tmp_path / REPORT).read_text())["check"] == rep["check"]
    check = rep["check"]
    assert check["ran"] and check["ok"] and check["max_rel_err"] <= TOLERANCE
    assert check["top1_agreement"] == 1.0
    # the check discriminates: the float model is much further from the simulation than onnxruntime
    from autocomp.policy import apply
    with torch.no_grad():
        x = wl.sample_input()
        sim = output_tensor(call_model(apply(model, policy, ranges), x))
        fl = output_tensor(call_model(model, x))
    assert float((fl - sim).abs().max() / sim.abs().max()) > 20 * max(check["max_rel_err"], 1e-6)

    graph = onnx.load(str(tmp_path / MODEL)).graph
    ops = [n.op_type for n in graph.node]
    quantized_w = [n for n, c in policy.layers]
    assert sum(o == "DequantizeLinear" for o in ops) >= len(quantized_w)
    assert "QuantizeLinear" in ops and "Clip" in ops               # a4 / a6 inputs: uint8 + clip
    inits = {i.name: i for i in graph.initializer}
    assert all(f"{n}.weight" not in inits for n in quantized_w)    # no float copy of a quantized weight
    dq = {n.name: n for n in graph.node if n.op_type == "DequantizeLinear"}
    grouped = next(n for n, c in policy.layers if c.group)
    attrs = {a.name: a.i for a in dq[f"{grouped}.weight_dq"].attribute}
    assert attrs == {"axis": 1, "block_size": 16}
    assert inits[f"{grouped}.weight_quantized"].data_type == onnx.TensorProto.INT4
    layers = rep["layers"]
    assert any(l.get("activations", "").endswith("Clip to 16 codes") for l in layers.values())
    assert {l["codes"] for l in layers.values()} == {"int4", "int8"}


def test_missing_onnxruntime_is_one_line(without_package):
    without_package("onnxruntime")
    with pytest.raises(AutocompError, match=r"pip install 'autocomp\[onnx\]'"):
        onnx_export.require_onnx()


def test_registered_as_export_format():
    fmt = export_format("onnx")
    assert fmt.directory and set(fmt.requires) == {"onnx", "onnxruntime"}
