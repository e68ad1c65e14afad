"""Shared helpers of the QAT tests: digits layer names, a 2-bit policy, one torch thread."""
from __future__ import annotations

import pytest
import torch

from autocomp.modules import is_quantizable
from autocomp.policy import Choice, Policy


def names_of(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and is_quantizable(m)]


def inner(names: list[str], choice: Choice, edge: Choice = Choice(8, 8)) -> Policy:
    """``choice`` for every layer but the first and last (8 bits, as the binary spaces have them)."""
    last = len(names) - 1
    return Policy.from_choices([(n, edge if i in (0, last) else choice) for i, n in enumerate(names)])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Training tests on a shared 2-core machine run fastest on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
