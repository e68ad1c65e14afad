"""The checkpoint file layout the cost model counts is the one the exporter writes (autocomp.layout)."""
from __future__ import annotations

import pytest
import torch

from autocomp.budget import CostModel
from autocomp.export.checkpoint import sparse_float, stored_codes
from autocomp.export.codes import encode_layer
from autocomp.layout import FRAME_BYTES, file_layout, header_entry_bytes, layer_bytes, layer_tensors
from autocomp.policy import Choice, Policy
from autocomp.quant import compress_weight
from autocomp.profile import profile_model

CHOICES = [Choice(4, 8), Choice(3, 8), Choice(8, 32, group=32, zero_point=True), Choice(1.58, 8),
           Choice(2, 8, prune=0.75), Choice(4, 32, prune=0.25, group=32, zero_point=True), Choice(6, 8, prune=0.5),
           Choice(1, 8), Choice(5, 32, prune=0.97), Choice(32, 32, prune=0.5), Choice(32, 32)]


def _layer(rows=48, cols=96):
    torch.manual_seed(0)
    lin = torch.nn.Linear(cols, rows)
    return lin, profile_model(torch.nn.Sequential(lin), torch.randn(2, cols))[0]


def _written(w: torch.Tensor, choice: Choice) -> dict[str, torch.Tensor]:
    """What the exporter writes for a linear layer of weight ``w`` under ``choice`` (rtn)."""
    sim = compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point)
    if choice.w_bits == 32:
        if not choice.prune:
            return {"weight": w}
        t, _ = sparse_float("l", sim, choice.prune)
    else:
        lin, slin = torch.nn.Linear(w.shape[1], w.shape[0]), torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data, slin.weight.data = w.clone(), sim.clone()
        codes, scale, zeros, mask = stored_codes("l", lin, slin, choice, "rtn")
        t, _ = encode_layer(codes, scale, zeros, choice, mask)
    return {f"weight.{k}": v for k, v in t.items()}


_DT = {torch.int32: "I32", torch.uint8: "U8", torch.float16: "F16", torch.float32: "F32"}


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.key)
def test_layer_tensors_are_what_the_exporter_writes(choice):
    lin, info = _layer()
    written = _written(lin.weight.detach(), choice)
    got = sorted((k, _DT[v.dtype], tuple(v.shape)) for k, v in written.items())
    assert got == sorted(layer_tensors(info, choice))


def test_header_entries_match_a_real_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    lin, info = _layer()
    tensors = {}
    for i, c in enumerate(CHOICES):
        for k, v in _written(lin.weight.detach(), c).items():
            tensors[f"layer{i}.{k}"] = v.contiguous()
    save_file(tensors, str(tmp_path / "m.safetensors"))
    header = (tmp_path / "m.safetensors").stat().st_size - sum(v.nbytes for v in tensors.values())
    digits = len(str(sum(v.nbytes for v in tensors.values())))
    predicted = FRAME_BYTES + sum(header_entry_bytes(k, _DT[v.dtype], v.shape, digits) for k, v in tensors.items())
    # the offsets' digits are estimated from the file's size: a few bytes per entry at most
    assert abs(predicted - header) <= 3 * len(tensors), (predicted, header)


def test_size_counts_the_file_and_earlier_studies_keep_their_accounting():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10))
    layers = profile_model(model, torch.randn(2, 1, 8, 8))
    lay = file_layout(model, layers)
    full, legacy = CostModel(layers, layout=lay), CostModel(layers)
    pol = Policy.from_choices({layers[0].name: Choice(8, 8), layers[1].name: Choice(4, 8, prune=0.5)})
    digits = lay.offset_digits
    assert full.cost("size", pol) == pytest.approx(
        lay.other_bytes + sum(layer_bytes(l, c, digits) for l, (_, c) in zip(layers, pol.layers)))
    # the old accounting: codes of the kept weights, no per-channel scales, positions or buffers
    assert legacy.cost("size", pol) == pytest.approx(
        layers[0].params * 8 / 8 + layers[1].params * 4 * 0.5 / 8 + legacy.other_params * 4)
    assert full.cost("size", pol) > legacy.cost("size", pol)
    # BatchNorm's buffers (running mean and var, the int64 counter) are in the full count
    bn_buffers = 4 * 4 * 2 + 8
    assert lay.other_bytes > legacy.other_params * 4 + bn_buffers
