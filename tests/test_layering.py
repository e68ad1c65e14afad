"""The layering of DESIGN.md, checked on the source: values <- plug-ins <- pipeline <- cli.

Every import counts, also one inside a function: a lazy import of a higher layer is still a
dependency on it. Plug-ins import values and their own family only; values import no Ray, no
solver and no database driver; nothing below the CLI imports Typer; and the module import graph
has no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"autocomp": "autocomp", "proxies": "autocomp.proxies", "workers": "autocomp.workers",
           "kernels": "autocomp.kernels", "search_spaces": "autocomp.search_spaces"}

VALUES = ("autocomp", "autocomp.errors", "autocomp.values", "autocomp.policy", "autocomp.budget",
          "autocomp.metrics", "autocomp.costs", "autocomp.layout", "autocomp.sensitivity", "autocomp.profile", "autocomp.modules",
          "autocomp.search_spaces", "autocomp.workload", "autocomp.quant", "autocomp.calibrate",
          "autocomp.progress", "autocomp.registry", "autocomp.target", "autocomp.interactions",
          "autocomp.devices", "autocomp.bands", "autocomp.arch", "autocomp.nas_models")
PLUGINS = ("autocomp.proxies", "autocomp.allocators", "autocomp.evaluators", "autocomp.kernels",
           "autocomp.workloads", "autocomp.quantizers")
# Quantizers are the numerics the evaluators and proxies are about (a proxy scores a choice with
# the quantizer that will be used; the PTQ evaluator applies it): those two families build on it.
BUILDS_ON = {("autocomp.evaluators", "autocomp.quantizers"), ("autocomp.proxies", "autocomp.quantizers")}
CLI = ("autocomp.cli",)
# The package's own namespace re-exports one pipeline function for users, resolved on first use
# (``autocomp.load_compressed``, a PEP 562 ``__getattr__``): the only upward import allowed.
FACADE = {("autocomp", "autocomp.export.load")}
LAYER_NAMES = ("values", "plug-ins", "pipeline", "cli")
# Third-party packages a layer must not import.
FORBIDDEN = {0: ("ray", "pulp", "highspy", "sqlalchemy", "alembic", "optuna", "typer", "psycopg"),
             1: ("ray", "sqlalchemy", "alembic", "optuna", "typer", "psycopg"),
             2: ("typer",)}


def _within(name: str, prefixes: tuple[str, ...]) -> str | None:
    """The longest prefix ``name`` lies in (a package or module of ``prefixes``), or None."""
    hits = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(hits, key=len) if hits else None


def layer_of(module: str) -> int:
    if _within(module, CLI):
        return 3
    if _within(module, PLUGINS):
        return 1
    v = _within(module, VALUES)
    # ``autocomp`` itself counts as values only for its own __init__; other modules are pipeline.
    if v and (v != "autocomp" or module == "autocomp"):
        return 0
    return 2


def family_of(module: str) -> str | None:
    return _within(module, PLUGINS)


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "autocomp" and parts and parts[0] in ("proxies", "workers", "kernels", "search_spaces"):
                continue  # not a real folder of autocomp/ (mapped from the top level)
            out[".".join([pkg, *parts])] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every imported module name (absolute), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # ``from autocomp import stages`` imports the submodule autocomp.stages.
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target, _ in _imports(m, path):
            if target in mods and target != m:
                graph[m].add(target)
    return graph


def layering_violations() -> list[str]:
    mods = _modules()
    bad = []
    for m, path in sorted(mods.items()):
        lm = layer_of(m)
        for target, line in _imports(m, path):
            top = target.split(".")[0]
            if top in FORBIDDEN.get(lm, ()):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {LAYER_NAMES[lm]} module {m} imports {target}")
                continue
            if target not in mods:
                continue
            lt = layer_of(target)
            if lt > lm and (m, target) not in FACADE:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {LAYER_NAMES[lm]} module {m} imports "
                           f"{LAYER_NAMES[lt]} module {target}")
            elif lm == lt == 1 and family_of(m) != family_of(target) and \
                    (family_of(m), family_of(target)) not in BUILDS_ON:
                bad.append(f"{path.relative_to(ROOT)}:{line}: plug-in {m} imports another family's {target}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges into a package's ``__init__`` from its own submodules: re-exports, not cycles."""
    out = {}
    for m, deps in graph.items():
        out[m] = {d for d in deps if not m.startswith(d + ".")}
    return out


def test_no_layer_imports_a_higher_one():
    bad = layering_violations()
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(_without_packages(_graph()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_check_sees_a_violation_and_a_cycle(tmp_path):
    """The checker itself can fail: a values module importing a plug-in, and a two-module cycle."""
    assert layer_of("autocomp.policy") == 0 and layer_of("autocomp.proxies.hessian") == 1
    assert layer_of("autocomp.stages.evaluate") == 2 and layer_of("autocomp.cli.search") == 3
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from autocomp.proxies import get_proxy\n")
    assert ("autocomp.proxies", 2) in _imports("autocomp.policy", src)
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


@pytest.mark.parametrize("module", ["autocomp.policy", "autocomp.budget", "autocomp.metrics", "autocomp.costs", "autocomp.sensitivity"])
def test_values_are_values(module):
    assert layer_of(module) == 0
