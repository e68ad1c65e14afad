"""Shared fixtures: one Ray session for the whole suite, the digits workload, study databases."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("AUTOCOMP_CACHE", str(Path.home() / ".cache" / "autocomp"))
# Without CUDA the Triton kernels run in Triton's interpreter, which must be on before triton is
# first imported; torchao (tests/export) imports triton while the test modules are collected.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray shared by every test (ray.init costs ~6 s here)."""
    from autocomp.workers.session import ensure_ray

    ray = ensure_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    from autocomp.workload import load_workload

    wl = load_workload("digits")
    wl.model()
    return wl


@pytest.fixture(scope="session")
def digits_layers(digits):
    from autocomp.profile import profile_model

    return profile_model(digits.model(), digits.sample_input())


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"
