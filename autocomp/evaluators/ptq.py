"""``ptq``: post-training quantization, scored exactly as the compressed model would run.

:meth:`PTQEvaluator.setup` calibrates every quantizable layer's input range once per workload
(for each activation bit-width in ``act_bits``); each evaluation then applies the policy to a
copy of the float model (:func:`autocomp.policy.apply`: pruned, fake-quantized weights and
inputs) and scores it with the workload's quality metric.

Example:
    >>> from autocomp.evaluators import get_evaluator
    >>> ev = get_evaluator("ptq")
    >>> ev.evaluate(workload, policy).quality                 # doctest: +SKIP
    0.953
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.errors import AutocompError
from autocomp.evaluators._base import DeviceOptions, Evaluator
from autocomp.metrics import Metrics
from autocomp.modules import activation_layers
from autocomp.policy import Policy, apply
from autocomp.workload import Workload

ACT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)


@dataclass(frozen=True)
class PTQOptions(DeviceOptions):
    """Options of :class:`PTQEvaluator`.

    Attributes:
        act_bits: activation bit-widths whose input ranges are calibrated (a policy asking for
            another width uses the widest calibrated range).
    """

    act_bits: tuple[int, ...] = ACT_BITS

    def __post_init__(self) -> None:
        super().__post_init__()
        bits = tuple(self.act_bits) if isinstance(self.act_bits, (list, tuple)) else (self.act_bits,)
        if not bits or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16 for b in bits):
            raise AutocompError(f"evaluator 'ptq': act_bits must be integers from 1 to 16, got {self.act_bits!r}")
        object.__setattr__(self, "act_bits", tuple(sorted(set(bits))))


class PTQEvaluator(Evaluator):
    """Calibrate once per workload, then apply and score each policy."""

    name = "ptq"
    Options = PTQOptions

    def setup(self, workload: Workload) -> None:
        model = workload.model()
        names = [n for n, _ in activation_layers(model)]  # not embeddings: their inputs are ids
        self._ranges = activation_ranges(activation_stats(model, names, workload.calib), self.options.act_bits)

    def evaluate(self, workload: Workload, policy: Policy) -> Metrics:
        workload = self.prepare(workload)   # on the evaluator's device
        t0 = time.perf_counter()
        with self.precision():
            quality = workload.evaluate(apply(workload.model(), policy, self._ranges))
        return Metrics(policy.id, float(quality), workload.quality, seconds=time.perf_counter() - t0)
