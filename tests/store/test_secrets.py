"""Database passwords never reach a message: errors show the URL with the password masked."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.errors import StoreError
from autocomp.store import Store

URL = "postgresql://autocomp:s3cr3t-pw@127.0.0.1:1/autocomp"   # port 1: nothing listens


def test_store_error_masks_the_password():
    with pytest.raises(StoreError) as e:
        Store(URL)
    assert "s3cr3t-pw" not in str(e.value) and "***" in str(e.value)


@pytest.mark.parametrize("args", [["studies", "list"], ["front", "show", "first"]])
def test_cli_errors_mask_the_password(args):
    res = CliRunner().invoke(app, [*args, "--db", URL])
    assert res.exit_code == 2, res.output
    assert "s3cr3t-pw" not in res.output and "error:" in res.output
