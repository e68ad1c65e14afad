from __future__ import annotations

import textwrap

import pytest

from autocomp.errors import ModelSpecError
from autocomp.workload import Workload, load_workload


def test_digits_is_trained_to_97_percent(digits):
    assert len(digits.calib) >= 2 and digits.eval
    assert digits.evaluate(digits.model()) >= 0.97
    x, y = digits.eval[0]
    assert x.shape[1:] == (1, 8, 8) and len(y) >= 400  # the fixed 25 % test split of 1797


def test_digits_model_is_cached(digits, tmp_path):
    from autocomp.workloads._cache import cache_dir

    assert any(p.name.startswith("digits-cnn") for p in cache_dir().iterdir())


USER_FILE = """
import torch
from autocomp.workload import Workload

def make():
    torch.manual_seed(0)
    x = torch.randn(32, 6); y = (x.sum(1) > 0).long()
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return Workload(name="tiny", model_factory=lambda: net, calib=[(x, y)], eval=[(x, y)])

def not_a_workload():
    return torch.nn.Linear(2, 2)

def broken():
    raise RuntimeError("no weights here")
"""


def test_user_workload_from_file_and_module(tmp_path, monkeypatch):
    f = tmp_path / "user_models.py"
    f.write_text(textwrap.dedent(USER_FILE))
    wl = load_workload(f"{f}:make")
    assert isinstance(wl, Workload) and wl.name == "tiny" and wl.spec == f"{f}:make"
    monkeypatch.syspath_prepend(str(tmp_path))
    wl2 = load_workload("user_models:make")
    assert wl2.evaluate(wl2.model()) >= 0.0


@pytest.mark.parametrize("spec,msg", [
    ("nonexistent_model", "unknown model"),
    ("no_such_pkg_xyz.mod:make", "cannot import"),
    ("autocomp.workload:no_such_factory", "has no attribute"),
    ("/nonexistent/dir/m.py:make", "no such file"),
    ("", "empty"),
])
def test_bad_specs(spec, msg):
    with pytest.raises(ModelSpecError, match=msg):
        load_workload(spec)


def test_factory_errors_are_one_line(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent(USER_FILE))
    with pytest.raises(ModelSpecError, match="must return"):
        load_workload(f"{f}:not_a_workload")
    with pytest.raises(ModelSpecError, match="no weights here"):
        load_workload(f"{f}:broken")
