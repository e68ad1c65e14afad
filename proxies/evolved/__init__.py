"""Evolved proxies: a JSON expression over primitives, registered as ``evolved:NAME``.

``autocomp proxies evolve`` (:mod:`autocomp.evolution`) searches the expression on a proxy bench
and saves it as ``proxies/evolved/NAME.json`` (or a path of the user's). The file is readable::

    {"version": 1, "name": "digits", "text": "hawq * log(numel)",
     "expression": ["mul", "hawq", ["log", "numel"]], "primitives": ["hawq", "numel"], ...}

``get_proxy("evolved:NAME")`` loads ``NAME.json`` from this folder; ``evolved:PATH.json`` loads a
file anywhere. The proxy computes only the primitives its expression reads (one part per source
proxy, plus one for the float model's own statistics), evaluates the expression per (layer,
choice), and shifts the result so that the smallest entry is 0: every policy takes one choice
per layer, so a constant shift leaves the ranking of policies (and any allocation) unchanged.

Example:
    >>> from autocomp.proxies.evolved import save_expression, load_expression
    >>> record = {"name": "demo", "expression": ["mul", "hessian", "perturb"]}
    >>> path = save_expression(record, tmp / "demo.json")                      # doctest: +SKIP
    >>> get_proxy(f"evolved:{path}").score(wl, layers, space)                  # doctest: +SKIP
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from autocomp.errors import AutocompError
from autocomp.proxies._base import Part, Proxy
from autocomp.proxies._options import at_least
from autocomp.proxies.evolved import expression as ex
from autocomp.proxies.evolved.primitives import (CHOICE, LOCAL, NAMES, SOURCE_OPTIONS, Primitives, from_sources,
                                                 local_primitives, sources_for)
from autocomp.sensitivity import Sensitivity

PREFIX = "evolved:"
FOLDER = Path(__file__).resolve().parent
EXPRESSION_VERSION = 1


def expression_path(ref: str) -> Path:
    """The file ``evolved:REF`` names: ``REF.json`` in this folder, or ``REF`` itself when it is a path."""
    if ref.endswith(".json") or "/" in ref or "\\" in ref:
        return Path(ref).expanduser()
    return FOLDER / f"{ref}.json"


def load_expression(ref: str) -> dict[str, Any]:
    """The saved expression ``ref`` names, checked (one-line errors)."""
    path = expression_path(ref)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AutocompError(f"unknown proxy 'evolved:{ref}': no file {path}") from None
    except (OSError, ValueError) as e:
        raise AutocompError(f"proxy 'evolved:{ref}': cannot read {path}: {e}") from None
    if not isinstance(data, dict) or data.get("version") != EXPRESSION_VERSION or "expression" not in data:
        raise AutocompError(f"proxy 'evolved:{ref}': {path} is not an evolved expression "
                            f"(version {EXPRESSION_VERSION})")
    try:
        ex.check(data["expression"], NAMES)
    except ex.InvalidExpression as e:
        raise AutocompError(f"proxy 'evolved:{ref}': {e}") from None
    return data


def save_expression(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write an expression record (``name``, ``expression`` and whatever else describes it) as JSON."""
    ex.check(data["expression"], NAMES)
    out = {"version": EXPRESSION_VERSION, **data, "text": ex.text(data["expression"]),
           "primitives": ex.leaves(data["expression"])}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def saved_names() -> list[str]:
    """``evolved:NAME`` for every expression saved in this folder."""
    return [PREFIX + p.stem for p in sorted(FOLDER.glob("*.json"))]


def entries(layers: Sequence, space) -> tuple[list[tuple[str, Any]], np.ndarray]:
    """Every (layer name, choice) of the space in a fixed order, and each entry's layer index."""
    choices = space.choices(layers)
    out = [(l.name, c) for l in layers for c in choices[l.name]]
    index = {l.name: i for i, l in enumerate(layers)}
    return out, np.asarray([index[n] for n, _ in out], dtype=np.int64)


def terminals(prims: Primitives, items: Sequence[tuple[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each primitive of ``names`` as a vector over ``items`` (layer values repeat over choices)."""
    env: dict[str, np.ndarray] = {}
    for n in names:
        if n == "w_bits":
            env[n] = np.asarray([c.effective_w_bits for _, c in items], dtype=float)
        elif n == "a_bits":
            env[n] = np.asarray([float(c.a_bits) for _, c in items], dtype=float)
        elif n == "keep":
            env[n] = np.asarray([1.0 - float(c.prune) for _, c in items], dtype=float)
        elif n in prims.choice:
            env[n] = np.asarray([prims.choice[n][l][c.key] for l, c in items], dtype=float)
        else:
            env[n] = np.asarray([prims.layer[n][l] for l, _ in items], dtype=float)
    return env


class EvolvedProxy(Proxy):
    """An expression over primitives (see the module docstring); ``evolved:NAME`` builds one.

    Options: ``hessian_probes`` (most Hutchinson probes of the Hessian-trace source, default 16).
    """

    @dataclass(frozen=True)
    class Options:
        hessian_probes: int = 16

        def __post_init__(self) -> None:
            at_least(self, hessian_probes=1)

    def __init__(self, ref: str, record: Mapping[str, Any] | None = None, **options: Any):
        # The name is set before the options are checked: their errors name the proxy.
        self.name = PREFIX + ref
        self.record = dict(record if record is not None else load_expression(ref))
        self.expression = self.record["expression"]
        super().__init__(**options)

    def _sources(self) -> list[str]:
        return sources_for(ex.leaves(self.expression))

    def _source_options(self, src: str) -> dict[str, Any]:
        opts = dict(SOURCE_OPTIONS.get(src, {}))
        if src == "hessian_trace":
            opts["max_probes"] = self.config.hessian_probes
            opts["min_probes"] = min(opts.get("min_probes", 1), self.config.hessian_probes)
        return opts

    def parts(self, workload, layers: Sequence, space) -> list[Part]:
        out = [Part("source", batch=i) for i in range(len(self._sources()))]
        if set(ex.leaves(self.expression)) & set(LOCAL):
            out.append(Part("local"))
        return out

    def score_part(self, workload, layers: Sequence, space, part: Part) -> Any:
        from autocomp.proxies._base import get_proxy

        if part.kind == "local":
            return {"local": local_primitives(workload.model(), layers, workload.calib)}
        src = self._sources()[int(part.batch or 0)]
        return {"source": src, "sensitivity": get_proxy(src, **self._source_options(src)).score(workload, layers,
                                                                                                space).to_dict()}

    def combine(self, workload, layers: Sequence, space, results: Sequence[Any]) -> Sensitivity:
        sens = {r["source"]: Sensitivity.from_dict(r["sensitivity"]) for r in results if "source" in r}
        local = next((r["local"] for r in results if "local" in r), {})
        used = ex.leaves(self.expression)
        prims = from_sources(sens, local, [n for n in used if n not in CHOICE])
        items, layer_index = entries(layers, space)
        values = omega_values(self.expression, prims, items, layer_index)
        omega: dict[str, dict[str, float]] = {l.name: {} for l in layers}
        for (n, c), v in zip(items, values):
            omega[n][c.key] = float(v)
        scores = {n: float(np.mean(list(cs.values()))) if cs else 0.0 for n, cs in omega.items()}
        return Sensitivity(self.name, omega, scores)


def omega_values(tree: Any, prims: Primitives, items: Sequence[tuple[str, Any]], layer_index: np.ndarray) -> np.ndarray:
    """The expression per entry, shifted to a minimum of 0 (non-finite values raise one line)."""
    values = ex.evaluate(tree, terminals(prims, items, ex.leaves(tree)), layer_index)
    if not np.isfinite(values).all():
        raise AutocompError(f"evolved expression {ex.text(tree)!r} is not finite on this model")
    return values - values.min() if len(values) else values


def register_evolved(ref: str) -> str:
    """Register ``evolved:REF`` (loading its file now, so a bad file is one line here)."""
    from autocomp.proxies._base import register

    record = load_expression(ref)
    register(PREFIX + ref, functools.partial(EvolvedProxy, ref, record))
    return PREFIX + ref
