"""A QAT trial keeping PB-LLM salient weights is stored at its true costs (the 8-bit values, their
per-channel scales and their positions counted, as a checkpoint would store them) and the merged
front shows it there, as a point of its own beside the policy's PTQ one (real trial on digits)."""
from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from autocomp.budget import parse_budget
from autocomp.cli import app
from autocomp.evaluators import get_evaluator
from autocomp.policy import Choice, Policy
from autocomp.report import front, study_points
from autocomp.search_spaces import load_space
from autocomp.stages import profile, record_profile
from autocomp.store import Store
from autocomp.trial_options import qat_options, trial_kind
from autocomp.trials import qat_trials

SALIENT = 0.05


def _entry(key: str, dtype: str, shape: tuple, digits: int) -> int:
    """A safetensors header entry (compact JSON, its comma), written out here from the format."""
    off = int("9" * digits)
    body = json.dumps({"dtype": dtype, "shape": list(shape), "data_offsets": [off, off]}, separators=(",", ":"))
    return len(json.dumps(key)) + 1 + len(body) + 1


def _salient_bytes(layers, digits: int) -> tuple[float, float, float]:
    """(bytes with header entries, bits, 8-bit MACs x a_bits) of the salient tensors, from the shapes."""
    size = bits = ops = 0.0
    for l in layers:
        numel = math.prod(l.weight_shape)
        n = round(SALIENT * numel)
        ib = math.ceil(math.log2(numel))
        index, mask = math.ceil(n * ib / 8), math.ceil(numel / 8)
        pos = ("index", index) if n * ib < numel else ("mask", mask)
        rows = l.weight_shape[0]
        tensors = [("values", "I8", (n,), n), ("scale", "F16", (rows,), 2 * rows), (pos[0], "U8", (pos[1],), pos[1])]
        for key, dtype, shape, b in tensors:
            size += b + _entry(f"{l.name}.weight.salient.{key}", dtype, shape, digits)
            bits += 8 * b
        ops += l.macs * n / numel * 8 * 8
    return size, bits, ops


def test_salient_trial_is_stored_and_shown_at_its_true_size(ray_session, sqlite_url, digits):
    store = Store(sqlite_url)
    ctx = profile(digits, parse_budget("size<=25%"), load_space("mixed_precision"))
    st, _ = store.open_study("s", {"model": ctx.spec, **ctx.stored_config()})
    record_profile(store, st, ctx)
    tern = Policy.uniform(ctx.names, Choice(1.58, 8, 0.0))
    u8 = Policy.uniform(ctx.names, Choice(8, 8, 0.0))
    ptq = get_evaluator("ptq")
    for label, pol in (("ternary", tern), ("u8", u8)):
        store.save_policy(st, pol, "uniform" if label == "u8" else "ilp", label, ctx.cm.costs(pol))
        store.save_evaluation(st, ptq.evaluate(digits, pol).with_costs(ctx.cm.costs(pol)))
    st = store.get_study("s")
    opts = qat_options({"steps": 20, "salient": SALIENT})

    res = qat_trials(store, st, ctx, 1, opts, max_concurrent=1)
    assert res.evaluated == 1 and not res.failures
    (e,) = store.list_evaluations(st, kind=trial_kind(opts))
    plain = ctx.cm.costs(tern)
    size, bits, ops = _salient_bytes(ctx.layers, ctx.cm.layout.offset_digits)
    assert size > 0
    assert e.size == plain["size"] + size
    assert math.isclose(e.avg_bits, plain["avg_bits"] + bits / sum(l.params for l in ctx.layers), rel_tol=1e-12)
    assert math.isclose(e.bitops, plain["bitops"] + ops, rel_tol=1e-12)
    # the policy keeps its own costs; its PTQ evaluation too
    assert store.get_policy(st, tern.id).costs["size"] == plain["size"]

    ptq_q = next(x.quality for x in store.list_evaluations(st) if x.policy_id == tern.id)
    pts = [p for p in study_points(store, st, kind=None) if p["policy_id"] == tern.id]
    by_kind = {p["kind"]: p for p in pts}
    assert set(by_kind) == {"ptq", "qat"}                      # two models, two points
    assert by_kind["ptq"]["size"] == plain["size"] and not by_kind["ptq"].get("own_costs")
    assert by_kind["qat"]["size"] == plain["size"] + size and by_kind["qat"]["own_costs"]
    assert by_kind["qat"]["quality"] == e.quality and by_kind["qat"]["ptq_quality"] == ptq_q

    merged = [p for p in front(store, st) if p["policy_id"] == tern.id]
    sizes = {p["size"] for p in merged}
    assert plain["size"] in sizes                              # the cheapest searched point
    assert (plain["size"] + size in sizes) == (e.quality > ptq_q)   # on the front only if it pays off
    shown = CliRunner().invoke(app, ["front", "show", "s", "--db", sqlite_url, "--json"])
    assert shown.exit_code == 0, shown.output
    js = [p for p in json.loads(shown.stdout)["points"] if p["policy_id"] == tern.id]
    assert sorted(p["size"] for p in js) == sorted(sizes)
    table = CliRunner().invoke(app, ["front", "show", "s", "--db", sqlite_url])
    assert table.exit_code == 0 and ("+salient" in table.stdout) == (e.quality > ptq_q), table.stdout
