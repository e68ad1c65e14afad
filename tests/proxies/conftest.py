"""Proxy tests run single-threaded: on a shared 2-core machine, intra-op threads oversubscribe
the cores and slow the double-backward passes of the Hessian proxies several-fold."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
