"""``nas``: train a NAS candidate from scratch under quantization noise, then score it by PTQ.

The policy carries the candidate's architecture (:attr:`autocomp.policy.Policy.arch`). The
evaluator builds it (:func:`autocomp.nas_models.build`), trains it for ``steps`` optimizer steps
with each layer's weights fake-quantized at its policy bits in the forward pass and a
straight-through gradient (QuantNAS trains its candidates with quantization in the loop, so the
search ranks networks by how they do quantized, not in float), then scores the trained float
weights exactly as the study scores its own policies: the ``ptq`` evaluator (calibrated 8-bit
input ranges, the ``quantizer``'s weights) on the workload's evaluation batches.

With ``act_noise`` (the default) each quantized layer's input is fake-quantized too, at the
layer's ``a_bits``, over a range tracked during training (the batch min/max, then an exponential
moving average with momentum ``act_momentum``, updated in train mode only), straight through:
the candidate is trained for the activation quantization it is scored with. Per-token inputs
(``act: token``) are quantized per token, as PTQ does; float inputs are left alone.

Training data: the workload's training split (``Workload.train``) and its calibration batches
(both come from the training images; the evaluation batches are never trained on).

Example:
    >>> ev = get_evaluator("nas", steps=200, seed=0)                # doctest: +SKIP
    >>> ev.evaluate(load_workload("digits"), nas_policy).quality    # doctest: +SKIP
    0.96
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocomp.errors import AutocompError
from autocomp.evaluators._base import DeviceOptions, Evaluator
from autocomp.evaluators.ptq import PTQEvaluator, build_quantizer
from autocomp.metrics import Metrics
from autocomp.nas_models import build
from autocomp.policy import Choice, Policy, policy_modules
from autocomp.modules import is_embedding
from autocomp.quant import compress_weight, fake_quant_act, fake_quant_act_token, is_float
from autocomp.workload import Workload


@dataclass(frozen=True)
class NASOptions(DeviceOptions):
    """Options of :class:`NASEvaluator`.

    Attributes:
        steps: optimizer steps of the candidate's training (Adam, one-cycle schedule).
        lr: peak learning rate.
        batch: training batch size.
        seed: initialisation and batch order.
        report_every: steps between intermediate reports (0: none); what ASHA stops trials on.
        quantizer: the PTQ quantizer the trained candidate is scored with (as the study's).
        act_noise: fake-quantize each quantized layer's input at its ``a_bits`` in training too.
        act_momentum: the tracked input range's moving-average momentum, in [0, 1).
    """

    steps: int = 200
    lr: float = 4e-3
    batch: int = 64
    seed: int = 0
    report_every: int = 0
    quantizer: str = "rtn"
    act_noise: bool = True
    act_momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("steps", "batch"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AutocompError(f"evaluator 'nas': {k} must be a positive integer, got {v!r}")
        if isinstance(self.report_every, bool) or not isinstance(self.report_every, int) or self.report_every < 0:
            raise AutocompError(f"evaluator 'nas': report_every must be 0 or a positive integer, "
                                f"got {self.report_every!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise AutocompError(f"evaluator 'nas': lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.act_noise, bool):
            raise AutocompError(f"evaluator 'nas': act_noise must be true or false, got {self.act_noise!r}")
        m = self.act_momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1:
            raise AutocompError(f"evaluator 'nas': act_momentum must be a number in [0, 1), got {m!r}")
        build_quantizer(self.quantizer)


class _STEFakeQuant(nn.Module):
    """Weight parametrization: the forward sees the weight compressed as ``choice`` (the PTQ
    numerics), the gradient passes straight through to the float weight."""

    def __init__(self, choice: Choice):
        super().__init__()
        self.choice = choice

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        c = self.choice
        q = compress_weight(w.detach(), c.w_bits, c.prune, c.group, c.zero_point)
        return w + (q - w.detach())


class _ActNoise:
    """Forward pre-hook: the input fake-quantized at ``bits`` over a tracked range (see the module
    docstring), with a straight-through gradient. The range moves only while the module trains."""

    def __init__(self, bits: int, momentum: float, per_token: bool = False):
        self.bits, self.momentum, self.per_token = int(bits), float(momentum), per_token
        self.lo: float | None = None
        self.hi: float | None = None

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if self.per_token:
            q = fake_quant_act_token(x.detach(), self.bits)
        else:
            if module.training:
                lo, hi = float(x.detach().min()), float(x.detach().max())
                if self.lo is None:
                    self.lo, self.hi = lo, hi
                else:
                    m = self.momentum
                    self.lo, self.hi = m * self.lo + (1 - m) * lo, m * self.hi + (1 - m) * hi
            if self.lo is None:
                return args
            q = fake_quant_act(x.detach(), self.lo, self.hi, self.bits)
        return (x + (q - x.detach()),) + tuple(args[1:])


def _training_tensors(workload: Workload) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(getattr(workload, "train", None) or []) + list(workload.calib)
    if not batches or not all(isinstance(x, torch.Tensor) for x, _ in batches):
        raise AutocompError(f"evaluator 'nas': workload {workload.name!r} has no tensor training batches")
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


class NASEvaluator(Evaluator):
    """Build, train under fake-quantized weights, and PTQ-score a policy's architecture."""

    name = "nas"
    Options = NASOptions
    trains = True

    def train(self, workload: Workload, policy: Policy,
              on_report: Callable[[int, float], None] | None = None) -> nn.Module:
        """The candidate trained for ``steps`` with quantization noise (float weights, eval mode).

        Args:
            on_report: called every ``report_every`` steps with (step, quality of the
                fake-quantized model on the evaluation batches).
        """
        if policy.arch is None:
            raise AutocompError(f"evaluator 'nas': policy {policy.id} has no architecture (a NAS policy has one)")
        o = self.options
        model = build(policy.arch, o.seed)
        quantized = [(m, c) for _, c, m in policy_modules(model, policy) if not is_float(c.w_bits) or c.prune > 0]
        for m, c in quantized:
            parametrize.register_parametrization(m, "weight", _STEFakeQuant(c))
        hooks = [m.register_forward_pre_hook(_ActNoise(c.a_bits, o.act_momentum, c.per_token))
                 for _, c, m in policy_modules(model, policy)
                 if o.act_noise and not is_float(c.a_bits) and not is_embedding(m)]
        x, y = _training_tensors(workload)
        g = torch.Generator().manual_seed(o.seed)
        opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=o.steps)
        perm, at = torch.randperm(len(x), generator=g), 0
        model.train()
        for step in range(1, o.steps + 1):
            if at + o.batch > len(x):
                perm, at = torch.randperm(len(x), generator=g), 0
            idx = perm[at:at + o.batch]
            at += o.batch
            opt.zero_grad()
            workload.loss(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
            if on_report is not None and o.report_every and step % o.report_every == 0:
                on_report(step, workload.evaluate(model.eval()))
                model.train()
        for h in hooks:
            h.remove()
        for m, _ in quantized:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        return model.eval()

    def run(self, workload: Workload, policy: Policy,
            on_report: Callable[[int, float], None] | None = None) -> Metrics:
        """:meth:`train`, then the ``ptq`` evaluator's score of the trained candidate under ``policy``."""
        t0 = time.perf_counter()
        trained = self.train(workload, policy, on_report)
        wl = dataclasses.replace(workload, name=f"{workload.name}:nas", model_factory=lambda: trained, _model=None)
        ptq = PTQEvaluator(quantizer=self.options.quantizer)
        res = ptq.evaluate(wl, policy)
        return Metrics(policy.id, res.quality, res.quality_metric, seconds=time.perf_counter() - t0,
                       extras={"steps": self.options.steps})

    def evaluate(self, workload: Workload, policy: Policy) -> Metrics:
        return self.run(workload, policy)
