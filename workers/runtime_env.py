"""Shipping the user's workload code to the nodes of a Ray cluster (a Ray ``runtime_env``).

On a local Ray the workers share the controller's file system and ``sys.path``. On a cluster
they do not: :func:`cluster_runtime_env` builds a runtime environment from
``workers/cluster/runtime_env.yaml`` plus what the ``--model`` spec needs (its file's folder as
``working_dir``, or its package as ``py_modules``), and the spec the workers must load instead of
the controller's (a file path becomes relative to the shipped folder). The workers read that
mapping from ``$AUTOCOMP_SPEC_MAP`` (:func:`worker_spec`), so every caller can keep passing the
spec the user typed.

Example:
    >>> env, spec = cluster_runtime_env("digits")
    >>> spec
    'digits'
    >>> sorted(env)
    ['env_vars', 'excludes']
"""
from __future__ import annotations

import importlib.util
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from autocomp.errors import ModelSpecError

SPEC_MAP_VAR = "AUTOCOMP_SPEC_MAP"
_BASE = Path(__file__).with_name("cluster") / "runtime_env.yaml"


def base_runtime_env() -> dict[str, Any]:
    """The shipped ``workers/cluster/runtime_env.yaml`` as a dict."""
    with open(_BASE) as f:
        return dict(yaml.safe_load(f) or {})


def _installed(path: str) -> bool:
    """Whether ``path`` lies in an installed location (site-packages, the stdlib)."""
    p = os.path.realpath(path)
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    return any(p == r or p.startswith(os.path.realpath(r) + os.sep) for r in roots)


def cluster_runtime_env(spec: str | None) -> tuple[dict[str, Any], str | None]:
    """The runtime env that lets cluster workers load ``spec``, and the spec they should load.

    Args:
        spec: the ``--model`` string (built-in name, ``pkg.module:factory``, ``file.py:factory``).

    Raises:
        ModelSpecError: a file spec whose file does not exist.
    """
    from autocomp.workload import BUILTIN

    env = base_runtime_env()
    if not spec or spec in BUILTIN or ":" not in spec:
        return env, spec
    mod_part, _, attr = spec.rpartition(":")
    if mod_part.endswith(".py") or "/" in mod_part or os.sep in mod_part:
        path = Path(mod_part).expanduser().resolve()
        if not path.is_file():
            raise ModelSpecError(f"model spec {spec!r}: no such file {str(path)!r}")
        env["working_dir"] = str(path.parent)
        return env, f"{path.name}:{attr}"
    top = mod_part.split(".")[0]
    if top == "autocomp":  # installed on every node (cluster.yaml), also when editable here
        return env, spec
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None or found.origin in (None, "built-in", "frozen"):
        return env, spec  # not importable here: the workers will say so in one line
    if found.submodule_search_locations:
        where = list(found.submodule_search_locations)[0]
    else:
        where = found.origin
    if not _installed(where):
        env["py_modules"] = [where]
    return env, spec


def with_spec_map(env: dict[str, Any], spec: str | None, worker: str | None) -> dict[str, Any]:
    """``env`` plus ``$AUTOCOMP_SPEC_MAP`` telling workers to load ``worker`` for ``spec``."""
    if spec and worker and worker != spec:
        env = {**env, "env_vars": {**env.get("env_vars", {}), SPEC_MAP_VAR: json.dumps({spec: worker})}}
    return env


def worker_spec(spec: str) -> str:
    """On a worker: the spec to load for the controller's ``spec`` (itself unless remapped)."""
    raw = os.environ.get(SPEC_MAP_VAR)
    if not raw:
        return spec
    try:
        return json.loads(raw).get(spec, spec)
    except ValueError:
        return spec
