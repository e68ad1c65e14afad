"""``qat``: quantization-aware fine-tuning with a straight-through estimator, then PTQ-style scoring.

The evaluation fine-tunes a copy of the float model for a few epochs on the workload's
calibration batches: the forward pass sees pruned, fake-quantized weights and activations, the
gradient flows to the float weights as if quantization were the identity. It then re-calibrates
the activation ranges and scores the compressed model exactly as ``ptq`` does. Refinement runs
it inside Ray Tune trials (:mod:`autocomp.refine_qat`).

Example:
    >>> from autocomp.evaluators import get_evaluator
    >>> ev = get_evaluator("qat", epochs=1)
    >>> ev.evaluate(workload, policy).extras["epochs"]          # doctest: +SKIP
    1
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.nn.utils import parametrize

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.errors import AutocompError
from autocomp.evaluators._base import DeviceOptions, Evaluator
from autocomp.evaluators.ptq import ACT_BITS
from autocomp.metrics import Metrics
from autocomp.modules import call_model, is_transposed
from autocomp.policy import Choice, Policy, apply, input_range
from autocomp.quant import compress_weight, fake_quant_act, is_float
from autocomp.workload import Workload


@dataclass(frozen=True)
class QATOptions(DeviceOptions):
    """Options of :class:`QATEvaluator`.

    Attributes:
        epochs: passes over the calibration batches (0: re-calibrate only).
        lr: Adam learning rate.
        seed: torch seed of the fine-tune.

    ``device`` and ``eval_dtype`` come from :class:`~autocomp.evaluators.DeviceOptions`: the
    fine-tune runs on the device in float32, the scoring under autocast to ``eval_dtype``.
    """

    epochs: int = 2
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 0:
            raise AutocompError(f"evaluator 'qat': epochs must be an integer of 0 or more, got {self.epochs!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (math.isfinite(self.lr)
                                                                                        and self.lr > 0):
            raise AutocompError(f"evaluator 'qat': lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise AutocompError(f"evaluator 'qat': seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "lr", float(self.lr))


class QATEvaluator(Evaluator):
    """Fine-tune under the policy (STE), re-calibrate, score; ``extras["epochs"]`` records the length."""

    name = "qat"
    trains = True
    Options = QATOptions

    def evaluate(self, workload: Workload, policy: Policy) -> Metrics:
        t0 = time.perf_counter()
        o = self.options
        workload = self.prepare(workload)   # on the evaluator's device; the fine-tune runs there in float32
        tuned, ranges = qat_finetune(workload.model(), policy, workload.calib, workload.loss, epochs=o.epochs,
                                     lr=o.lr, seed=o.seed)
        with self.precision():
            quality = workload.evaluate(apply(tuned, policy, ranges))
        return Metrics(policy.id, float(quality), workload.quality, extras={"epochs": o.epochs},
                       seconds=time.perf_counter() - t0)


class _STEWeight(torch.nn.Module):
    """Weight parametrization: forward = compressed weight, backward = identity (STE)."""

    def __init__(self, choice: Choice, transposed: bool):
        super().__init__()
        self.bits, self.prune, self.transposed = choice.w_bits, choice.prune, transposed
        self.group, self.zero_point = choice.group, choice.zero_point

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        src = w.t() if self.transposed else w
        q = compress_weight(src.detach(), self.bits, self.prune, self.group, self.zero_point)
        q = q.t() if self.transposed else q
        return w + (q - w).detach()


class _STEAct:
    """Input fake-quant pre-hook with a straight-through gradient."""

    def __init__(self, lo: float, hi: float, bits: int):
        self.lo, self.hi, self.bits = lo, hi, bits

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (x + (fake_quant_act(x, self.lo, self.hi, self.bits) - x).detach(),) + tuple(args[1:])


def _ranges(model: torch.nn.Module, names: Sequence[str], batches: Sequence) -> dict:
    return activation_ranges(activation_stats(model, list(names), batches), ACT_BITS)


def qat_finetune(model: torch.nn.Module, policy: Policy, batches: Sequence, loss: Callable, epochs: int = 2,
                 lr: float = 1e-3, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of ``model`` under ``policy`` with STE; returns (float model, act ranges).

    Batch-norm statistics stay frozen (eval mode): a few calibration batches are too few to
    re-estimate them, and PTQ scores the model with the same statistics.

    Example:
        >>> tuned, ranges = qat_finetune(wl.model(), policy, wl.calib, wl.loss, epochs=1)  # doctest: +SKIP
    """
    torch.manual_seed(seed)
    m = copy.deepcopy(model).eval()
    names = [n for n, _ in policy.layers]
    ranges = _ranges(m, names, batches)
    modules = dict(m.named_modules())
    hooks = []
    for name, ch in policy.layers:
        mod = modules[name]
        if not is_float(ch.w_bits) or ch.prune > 0:
            parametrize.register_parametrization(mod, "weight", _STEWeight(ch, is_transposed(mod)))
        if not is_float(ch.a_bits):
            lo, hi = input_range(ranges, name, ch)   # TOKEN_RANGE for a per-token choice
            hooks.append(mod.register_forward_pre_hook(_STEAct(lo, hi, int(ch.a_bits))))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(max(0, epochs)):
        for x, y in batches:
            opt.zero_grad()
            loss(call_model(m, x), y).backward()
            opt.step()
    for h in hooks:
        h.remove()
    for name, _ in policy.layers:
        mod = modules[name]
        if parametrize.is_parametrized(mod, "weight"):
            # Keep the latent float weights: ``apply`` quantizes them again below.
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
    return m.eval(), _ranges(m, names, batches)
