"""Per-layer, per-choice latency tables measured on the kernels (HAWQ-V3's latency budgets).

``profile_latency`` times every quantizable layer alone, on the input it receives from a real
calibration batch, once as the float module (key ``w32a32``) and once per choice of the search
space as the kernel-backed module. The table feeds ``CostModel(latency_table=...)`` so that
``--budget 'latency<=70%'`` is a sum of measured per-layer times.

File format (``autocomp profile-latency -o table.json``)::

    {"version": 1, "model": "digits", "device": "cpu", "batch": 128, "threads": 1,
     "table": {"features.0": {"w32a32": 1.2e-4, "w8a8": 9.1e-5, ...}, ...}}

Example:
    >>> table = profile_latency(load_workload("digits"), load_space("mixed_precision"))  # doctest: +SKIP
    >>> save_latency_table(table, "table.json")                                         # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from autocomp.errors import AutocompError
from autocomp.kernels.modules import convert
from autocomp.kernels.timing import measure, resolve_device
from autocomp.modules import batch_size, call_model, capture_inputs
from autocomp.policy import FLOAT_CHOICE, Policy
from autocomp.profile import profile_model

LATENCY_TABLE_VERSION = 1


def profile_latency(workload, space, device: str = "auto", repeats: int = 20,
                    on_layer: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure ``{layer: {choice_key: seconds}}`` for every layer and choice of ``space``.

    Args:
        workload: an :class:`autocomp.workload.Workload`.
        space: an :class:`autocomp.search_spaces.SearchSpace`.
        device: ``auto``, ``cpu`` or ``cuda``.
        repeats: timed calls per (layer, choice); the median is kept.
        on_layer: called with each layer name once it is measured (progress).

    Returns:
        The document written by :func:`save_latency_table` (``table`` holds the mapping).
    """
    from autocomp.calibrate import activation_ranges, activation_stats

    dev = resolve_device(device)
    model = workload.model()
    sample = workload.sample_input()
    layers = profile_model(model, sample)
    names = [l.name for l in layers]
    choices = {l.name: space.choices_for(l, len(layers)) for l in layers}
    bits = sorted({int(c.a_bits) for cs in choices.values() for c in cs if c.a_bits < 32})
    ranges = activation_ranges(activation_stats(model, names, workload.calib), bits or [8])
    inputs = _layer_inputs(model, names, sample)
    mods = dict(model.named_modules())
    table: dict[str, dict[str, float]] = {}
    for l in layers:
        if l.name not in inputs:
            continue  # never called: costs nothing
        x = inputs[l.name].to(dev)
        row = {}
        float_mod = mods[l.name].to(dev)
        row[FLOAT_CHOICE.key] = measure(lambda: float_mod(x), dev, repeats)
        float_mod.to("cpu")
        for c in choices[l.name]:
            if c.key in row:
                continue
            # A one-layer wrapper lets convert() build the module exactly as for a policy.
            holder = torch.nn.Module()
            holder.add_module("m", mods[l.name])
            kmod = convert(holder, Policy.from_choices({"m": c}), {"m": ranges.get(l.name, {})}).m.to(dev)
            with torch.no_grad():
                row[c.key] = measure(lambda: kmod(x), dev, repeats)
        table[l.name] = row
        if on_layer is not None:
            on_layer(l.name)
    model.to("cpu")
    return {"version": LATENCY_TABLE_VERSION, "model": workload.spec or workload.name, "device": str(dev),
            "batch": batch_size(sample), "threads": torch.get_num_threads(), "table": table}


def _layer_inputs(model: torch.nn.Module, names: list[str], sample: Any) -> dict[str, torch.Tensor]:
    """Each called layer's first input on ``sample``."""
    with capture_inputs(model, names) as seen, torch.no_grad():
        call_model(model, sample)
    return {n: calls[0] for n, calls in seen.items() if calls}


def save_latency_table(doc: Mapping[str, Any], path: str | Path) -> None:
    try:
        Path(path).write_text(json.dumps(doc, indent=1))
    except OSError as e:
        raise AutocompError(f"cannot write latency table {path}: {e.strerror}") from e


def load_latency_table(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a table file (the document above, or a bare ``{layer: {choice: seconds}}``)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise AutocompError(f"latency table {path} is not UTF-8 text (byte {e.start})") from e
    except OSError as e:
        raise AutocompError(f"cannot read latency table {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise AutocompError(f"latency table {path} is not JSON: {e.msg} (line {e.lineno})") from e
    table = doc.get("table", doc) if isinstance(doc, dict) else None
    if not isinstance(table, dict) or not all(isinstance(r, dict) for r in table.values()):
        raise AutocompError(f"latency table {path}: expected {{layer: {{choice_key: seconds}}}}")
    try:
        out = {str(l): {str(k): float(v) for k, v in row.items()} for l, row in table.items()}
    except (TypeError, ValueError) as e:
        raise AutocompError(f"latency table {path}: a latency is not a number ({e})") from e
    for layer, row in out.items():
        for key, v in row.items():
            # json reads NaN/Infinity; a budget on them would be meaningless
            if not math.isfinite(v) or v < 0:
                raise AutocompError(f"latency table {path}: {layer} {key} is {v!r}, not a finite latency >= 0")
    return out
