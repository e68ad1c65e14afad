"""A user's own evaluator, registered where it is defined: weights compressed as the policy says,
inputs left in float (no calibration). Loaded by path (``get_evaluator("<this file>:WeightOnly")``),
which is also how Ray workers, which cannot import the test modules by name, find it."""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from autocomp.errors import AutocompError
from autocomp.evaluators import Evaluator, register
from autocomp.metrics import Metrics
from autocomp.policy import Policy, apply
from autocomp.workload import Workload


@register
class WeightOnly(Evaluator):
    """Weight-only simulation; ``extras`` say how often this instance was set up and where."""

    name = "weight_only_toy"

    @dataclass(frozen=True)
    class Options:
        fail_on_prune: bool = False   # raise for a pruned policy (the pool's error path)

        def __post_init__(self) -> None:
            if not isinstance(self.fail_on_prune, bool):
                raise AutocompError(f"evaluator 'weight_only_toy': fail_on_prune must be true or false, "
                                    f"got {self.fail_on_prune!r}")

    def __init__(self, **options):
        super().__init__(**options)
        self.setups = 0

    def setup(self, workload: Workload) -> None:
        self.setups += 1

    def evaluate(self, workload: Workload, policy: Policy) -> Metrics:
        self.prepare(workload)
        if self.options.fail_on_prune and any(c.prune > 0 for _, c in policy.layers):
            raise ValueError(f"policy {policy.id} prunes")
        t0 = time.perf_counter()
        weights_only = Policy.from_choices([(n, dataclasses.replace(c, a_bits=32)) for n, c in policy.layers])
        quality = workload.evaluate(apply(workload.model(), weights_only))
        return Metrics(policy.id, float(quality), workload.quality, extras={"setups": self.setups, "pid": os.getpid()},
                       seconds=time.perf_counter() - t0)
