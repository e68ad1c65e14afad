"""``ptq``: post-training quantization, scored exactly as the compressed model would run.

:meth:`PTQEvaluator.setup` calibrates every quantizable layer's input range once per workload
(for each activation bit-width in ``act_bits``) and collects the statistics the quantizer needs
(:func:`autocomp.quantizers.collect_stats`: e.g. GPTQ's input Hessians), once per worker, from the
float model; each evaluation then applies the policy to a copy of the float model with that
quantizer (:meth:`autocomp.quantizers.Quantizer.apply`: pruned, quantized weights, fake-quantized
inputs) and scores it with the workload's quality metric. ``rtn`` (the default) is bit-identical
to :func:`autocomp.policy.apply`.

Example:
    >>> from autocomp.evaluators import get_evaluator
    >>> ev = get_evaluator("ptq", quantizer="gptq(act_order=True)")   # doctest: +SKIP
    >>> ev.evaluate(workload, policy).quality                         # doctest: +SKIP
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
from autocomp.policy import Policy
from autocomp.quantizers import Quantizer, collect_stats, get_quantizer
from autocomp.quantizers.per_layer import ensure_stats, for_policy
from autocomp.workload import Workload

ACT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)

def build_quantizer(spec: str) -> Quantizer:
    """The quantizer a spec names, as :func:`autocomp.quantizers.get_quantizer` reads it: ``rtn``,
    ``gptq(act_order=True)`` (options in the spec), ``gptq+bias_correction`` (a composition).

    Raises:
        AutocompError: an empty or malformed spec, an unknown name, or a bad option (one line).

    Example:
        >>> build_quantizer(" rtn ").spec
        'rtn'
        >>> build_quantizer("")
        Traceback (most recent call last):
        ...
        autocomp.errors.AutocompError: quantizer spec must be a non-empty string, got ''
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AutocompError(f"quantizer spec must be a non-empty string, got {spec!r}")
    return get_quantizer(spec.strip())


@dataclass(frozen=True)
class PTQOptions(DeviceOptions):
    """Options of :class:`PTQEvaluator`.

    Attributes:
        act_bits: activation bit-widths whose input ranges are calibrated (a policy asking for
            another width uses the widest calibrated range).
        quantizer: how weights become codes (:func:`build_quantizer` spec): ``rtn``, ``gptq``, ...
    """

    act_bits: tuple[int, ...] = ACT_BITS
    quantizer: str = "rtn"

    def __post_init__(self) -> None:
        super().__post_init__()
        bits = tuple(self.act_bits) if isinstance(self.act_bits, (list, tuple)) else (self.act_bits,)
        if not bits or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16 for b in bits):
            raise AutocompError(f"evaluator 'ptq': act_bits must be integers from 1 to 16, got {self.act_bits!r}")
        object.__setattr__(self, "act_bits", tuple(sorted(set(bits))))
        build_quantizer(self.quantizer)   # a bad spec fails when the evaluator is built, not on a worker


class PTQEvaluator(Evaluator):
    """Calibrate (and collect the quantizer's statistics) once per workload, then apply and score each policy."""

    name = "ptq"
    Options = PTQOptions

    def setup(self, workload: Workload) -> None:
        model = workload.model()
        names = [n for n, _ in activation_layers(model)]  # not embeddings: their inputs are ids
        self._ranges = activation_ranges(activation_stats(model, names, workload.calib), self.options.act_bits)
        self._quantizer = build_quantizer(self.options.quantizer)
        # one calibration pass for every policy this worker evaluates (none for rtn)
        self._stats = collect_stats(model, workload.calib, names, self._quantizer.needs)
        self._names, self._have = names, set(self._quantizer.needs)

    def evaluate(self, workload: Workload, policy: Policy) -> Metrics:
        workload = self.prepare(workload)   # on the evaluator's device
        t0 = time.perf_counter()
        quantizer = for_policy(self._quantizer, policy)   # choices naming their quantizer (w4a8@gptq)
        ensure_stats(self._stats, self._have, workload.model(), workload.calib, self._names, quantizer.needs)
        with self.precision():
            model = quantizer.apply(workload.model(), policy, self._ranges, self._stats, batches=workload.calib)
            quality = workload.evaluate(model)
        return Metrics(policy.id, float(quality), workload.quality, seconds=time.perf_counter() - t0)
