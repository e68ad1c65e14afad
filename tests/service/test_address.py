"""An address where nothing listens fails at once in one line (Ray itself retries for minutes),
before the study is touched."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from autocomp.errors import AutocompError
from autocomp.store import Store
from autocomp.workers.session import check_reachable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_nothing_listening_is_one_line(scheme):
    addr = f"{scheme}127.0.0.1:{_closed_port()}"
    with pytest.raises(AutocompError, match="nothing answers at 127.0.0.1"):
        check_reachable(addr)


def test_a_listening_port_passes_and_auto_is_left_to_ray():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}")
    check_reachable("auto")


def test_search_with_a_dead_address_exits_2(tmp_path, digits):
    """In a process of its own, as a user runs it (this test process may already hold a Ray session)."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "AUTOCOMP_DB")}
    res = subprocess.run([sys.executable, "-m", "autocomp.cli", "search", "--db", db, "--study", "s", "--address",
                          f"127.0.0.1:{_closed_port()}", "--points", "2"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: cannot connect to Ray at 127.0.0.1:")
    assert "nothing answers" in res.stderr and "Traceback" not in res.stderr
    st = Store(db).get_study("s", missing_ok=True)
    assert st is None   # nothing written: the cluster is checked before the study is opened
