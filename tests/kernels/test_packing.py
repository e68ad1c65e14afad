"""Bit packing: exact round trips for every width and layout, and clear errors."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autocomp.kernels.packing import code_range, container_bits, pack, packed_nbytes, per_word, unpack
from autocomp.quant import quantize_weight_codes


def _codes(bits: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if bits == 1:
        return torch.randint(0, 2, shape, generator=g) * 2 - 1
    lo, hi = code_range(bits)
    return torch.randint(lo, hi + 1, shape, generator=g)


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([1, 2, 4, 8]), rows=st.integers(1, 5), cols=st.integers(1, 70),
       dim=st.sampled_from([0, 1]), seed=st.integers(0, 10_000))
def test_round_trip_is_exact(bits, rows, cols, dim, seed):
    q = _codes(bits, (rows, cols), seed)
    p = pack(q, bits, dim=dim)
    assert p.dtype == torch.int32
    assert p.shape[dim] == -(-q.shape[dim] // per_word(bits))
    assert torch.equal(unpack(p, bits, q.shape[dim], dim=dim).long(), q)


@pytest.mark.parametrize("bits", [1, 1.58, 2, 4, 8])
def test_simulation_codes_round_trip_in_their_container(digits, bits):
    w = dict(digits.model().named_modules())["classifier.3"].weight.detach()
    codes, _ = quantize_weight_codes(w, bits)
    b = container_bits(codes)
    assert b == {1: 1, 1.58: 2, 2: 2, 4: 4, 8: 8}[bits]
    assert torch.equal(unpack(pack(codes, b, dim=1), b, codes.shape[1], dim=1).float(), codes)
    assert packed_nbytes(codes.numel(), b) == 4 * -(-codes.numel() // per_word(b))


def test_layout_matches_the_kernels_bit_fields():
    # code i of a word sits at bits (i % per) * bits, unsigned with offset 2**(bits-1)
    q = torch.tensor([[-8, 7, 0, 1, -1, 3, 2, -2]])
    word = int(pack(q, 4, dim=1)[0, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == [0, 15, 8, 9, 7, 11, 10, 6]
    assert int(pack(torch.tensor([[1, -1, 1]]), 1, dim=1)[0, 0]) == 0b101


def test_binary_codes_with_pruned_zeros_need_two_bits():
    assert container_bits(torch.tensor([-1.0, 0.0, 1.0])) == 2
    assert container_bits(torch.tensor([-1.0, 1.0])) == 1
    assert container_bits(torch.tensor([-5.0, 6.0])) == 4
    with pytest.raises(ValueError, match="do not fit 8 bits"):
        container_bits(torch.tensor([-300.0, 2.0]))


def test_out_of_range_codes_are_refused():
    with pytest.raises(ValueError, match="cannot be packed in 4 bits"):
        pack(torch.tensor([[8]]), 4)
    with pytest.raises(ValueError, match=r"\{-1, 1\}"):
        pack(torch.tensor([[0]]), 1)
    with pytest.raises(ValueError, match="packing supports"):
        pack(torch.tensor([[0]]), 3)
