"""What a cluster job ships for each kind of ``--model`` spec (workers/runtime_env.py).

The file-spec case runs end to end on a real cluster in test_cluster_faults.py; these check the
mapping for every kind of spec without starting Ray."""
from __future__ import annotations

import json
import sys

import pytest

from autocomp.errors import ModelSpecError
from autocomp.workers.runtime_env import SPEC_MAP_VAR, cluster_runtime_env, with_spec_map, worker_spec


def test_builtin_and_installed_specs_ship_nothing():
    for spec in ("digits", "autocomp.workloads.digits:digits", "yaml:safe_load"):
        env, worker = cluster_runtime_env(spec)
        assert worker == spec
        assert "working_dir" not in env and "py_modules" not in env
        assert env["env_vars"]["OMP_NUM_THREADS"] == "1" and ".venv" in env["excludes"]


def test_file_spec_ships_its_folder_and_workers_load_it_relative(tmp_path):
    (tmp_path / "models").mkdir()
    f = tmp_path / "models" / "mine.py"
    f.write_text("def make():\n    pass\n")

    env, worker = cluster_runtime_env(f"{f}:make")

    assert env["working_dir"] == str(tmp_path / "models")
    assert worker == "mine.py:make"
    with pytest.raises(ModelSpecError, match="no such file"):
        cluster_runtime_env(f"{tmp_path / 'missing.py'}:make")


def test_user_package_spec_ships_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg_p5a"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "models.py").write_text("def make():\n    pass\n")
    (tmp_path / "single_p5a.py").write_text("def make():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    env, worker = cluster_runtime_env("userpkg_p5a.sub.models:make")
    assert env["py_modules"] == [str(pkg)] and worker == "userpkg_p5a.sub.models:make"
    env, _ = cluster_runtime_env("single_p5a:make")
    assert env["py_modules"] == [str(tmp_path / "single_p5a.py")]
    sys.modules.pop("userpkg_p5a", None)


def test_workers_read_the_spec_map(monkeypatch):
    env = with_spec_map({"env_vars": {"A": "1"}}, "/home/me/m.py:make", "m.py:make")
    assert env["env_vars"]["A"] == "1"
    monkeypatch.setenv(SPEC_MAP_VAR, env["env_vars"][SPEC_MAP_VAR])
    assert worker_spec("/home/me/m.py:make") == "m.py:make"
    assert worker_spec("digits") == "digits"
    assert with_spec_map({}, "digits", "digits") == {}
    monkeypatch.setenv(SPEC_MAP_VAR, json.dumps({}))
    assert worker_spec("/home/me/m.py:make") == "/home/me/m.py:make"


def test_proxy_tasks_load_the_shipped_workload_not_the_controllers_path(monkeypatch):
    # A proxy task on another machine must load the shipped copy of the user's file, as PTQ/QAT do.
    from autocomp.workers.proxy_tasks import _workload

    monkeypatch.setenv(SPEC_MAP_VAR, json.dumps({"/nowhere/on/this/worker/wl.py:make": "digits"}))
    wl = _workload("/nowhere/on/this/worker/wl.py:make")
    assert wl.calib and wl.model() is not None
