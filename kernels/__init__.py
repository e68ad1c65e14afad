"""Low-bit kernels: bit packing, Triton GEMMs (GPU / interpreter), the CPU int8 path,
kernel-backed ``QuantLinear``/``QuantConv2d``, and validation of policies against the simulation.

Example:
    >>> from autocomp.kernels import convert, pack, unpack     # doctest: +SKIP
"""
from __future__ import annotations

from autocomp.kernels.modules import QuantConv2d, QuantLinear, convert, weight_codes
from autocomp.kernels.packing import pack, unpack

__all__ = ["QuantConv2d", "QuantLinear", "convert", "pack", "unpack", "weight_codes"]
