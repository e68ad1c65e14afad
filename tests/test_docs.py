"""The examples in the docs run, so one that goes stale fails the suite: README.md's ``>>>``
blocks, and the module doctests of the values and plug-in layers (the layers of
``tests/test_layering.py``). Lines marked ``# doctest: +SKIP`` are skipped, as doctest does."""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from autocomp.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Every registry an example may register into; each example's registrations are dropped after it.
REGISTRIES = [("autocomp.proxies._base", "_REGISTRY"), ("autocomp.allocators._base", "_REGISTRY"),
              ("autocomp.evaluators", "_REGISTRY"), ("autocomp.costs", "_COSTS"), ("autocomp.metrics", "_QUALITY")]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _layering():
    spec = importlib.util.spec_from_file_location("autocomp_docs_layering", ROOT / "tests" / "test_layering.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented_modules() -> list[str]:
    """Values and plug-in modules whose source holds an example (read, not imported)."""
    lay = _layering()
    return sorted(m for m, path in lay._modules().items()
                  if lay.layer_of(m) <= 1 and ">>>" in path.read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _own_registries(monkeypatch, tmp_path):
    """Examples register plug-ins and may write files: both stay inside the example."""
    for module, attr in REGISTRIES:
        mod = importlib.import_module(module)
        reg = getattr(mod, attr)
        assert isinstance(reg, Registry), f"{module}.{attr} is no longer a Registry: update REGISTRIES"
        monkeypatch.setattr(mod, attr, reg.copy())
    monkeypatch.chdir(tmp_path)


def _run(tests: list[doctest.DocTest]) -> tuple[int, int, str]:
    """(failures, examples tried, the failure report) of ``tests`` run in order."""
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t, out=out.append, clear_globs=False)
    return runner.failures, runner.tries, "".join(out)


def readme_tests() -> list[doctest.DocTest]:
    """One doctest per ```python block of README.md holding ``>>>``, sharing one namespace (the
    blocks build on each other as a reader's session would), with README line numbers."""
    text = README.read_text(encoding="utf-8")
    parser, globs, tests = doctest.DocTestParser(), {"__name__": "readme"}, []
    for m in FENCE.finditer(text):
        if ">>>" in m.group(1):
            line = text.count("\n", 0, m.start(1))
            tests.append(parser.get_doctest(m.group(1), {}, f"README.md:{line + 1}", str(README), line))
            tests[-1].globs = globs          # get_doctest copies the namespace; share one
    return tests


def test_readme_examples_run():
    tests = readme_tests()
    failures, tries, report = _run(tests)
    assert tries >= 30, f"only {tries} README examples found"
    assert failures == 0, report


def test_every_readme_example_is_in_a_python_block():
    text = README.read_text(encoding="utf-8")
    inside = {i for m in FENCE.finditer(text) for i in range(text.count("\n", 0, m.start(1)),
                                                             text.count("\n", 0, m.end(1)))}
    stray = [i + 1 for i, line in enumerate(text.splitlines()) if line.lstrip().startswith(">>>") and i not in inside]
    assert not stray, f"README.md lines {stray}: >>> outside a ```python block is never run"


@pytest.mark.parametrize("module", _documented_modules())
def test_module_examples_run(module):
    mod = importlib.import_module(module)
    tests = [t for t in doctest.DocTestFinder().find(mod) if t.examples]
    failures, tries, report = _run(tests)
    assert failures == 0, report


def test_the_runner_catches_a_stale_example():
    stale = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "stale", "stale.md", 0)
    skipped = doctest.DocTestParser().get_doctest(">>> 1 / 0  # doctest: +SKIP\n", {}, "skip", "skip.md", 0)
    assert _run([stale])[0] == 1
    assert _run([skipped])[:2] == (0, 0)
