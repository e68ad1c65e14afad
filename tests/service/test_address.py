"""An address where nothing listens fails at once in one line (Ray itself retries for minutes),
before the study is touched."""
from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from autocomp.cli import app
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
    db = f"sqlite:///{tmp_path / 's.db'}"
    res = CliRunner().invoke(app, ["search", "--db", db, "--study", "s", "--address",
                                   f"127.0.0.1:{_closed_port()}", "--points", "2"])
    assert res.exit_code == 2 and "nothing answers" in res.output, res.output
    st = Store(db).get_study("s", missing_ok=True)
    assert st is None   # nothing written: the cluster is checked before the study is opened
