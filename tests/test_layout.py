"""The package layout of DESIGN.md: four top-level folders installed as autocomp.* subpackages."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"search_spaces": "autocomp.search_spaces", "proxies": "autocomp.proxies",
          "workers": "autocomp.workers", "kernels": "autocomp.kernels"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    setup = _pyproject()["tool"]["setuptools"]
    listed = set(setup["packages"])
    pkg_dir = setup["package-dir"]
    for folder, name in MAPPED.items():
        assert pkg_dir[name] == folder
    found = set()
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts[0] in (".venv", "tests", "benchmarks", "build") or "egg-info" in str(rel):
            continue
        top = rel.parts[0]
        base = "autocomp" if top == "autocomp" else MAPPED.get(top)
        assert base is not None, f"{rel} is a package outside the mapped folders"
        found.add(".".join([base, *rel.parts[1:]]))
    assert found <= listed, f"packages missing from pyproject: {sorted(found - listed)}"
    assert listed <= found, f"pyproject lists packages that do not exist: {sorted(listed - found)}"


def test_subpackages_import_under_autocomp_only():
    for folder, name in MAPPED.items():
        mod = importlib.import_module(name)
        assert Path(mod.__file__).resolve().parent == ROOT / folder
    # Nothing claims the bare names in site-packages (checked outside the repo, whose root is
    # on sys.path when pytest runs from it).
    import subprocess

    code = "import importlib.util as u; print([n for n in %r if u.find_spec(n)])" % (list(MAPPED),)
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_is_declared():
    assert _pyproject()["project"]["scripts"]["autocomp"] == "autocomp.cli:main"
