"""``qat``: quantization-aware fine-tuning, then scoring of the compressed model it learned.

The evaluation fine-tunes a copy of the float model on the workload's training split (its
calibration batches when it has none: said once, in one line, and in ``extras["train_split"]``):
the forward pass sees pruned, fake-quantized weights and activations, the backward pass goes
through a gradient estimator (:mod:`._estimators`: ``ste``, ``reste``, ``biper``). Weight steps
and activation step sizes may be learned (LSQ, ``learn_scales``), the float model may teach
(``distill``). The scored model is the one trained: weights baked from the final latent weights
with the final steps (learned or rtn's), inputs quantized with the learned step sizes, or with
ranges re-calibrated on the tuned model when they are not learned. Refinement runs it inside
Ray Tune trials (:mod:`autocomp.refine_qat`).

With the defaults (``estimator="ste"``, no learned scales, no distillation) the fine-tune is the
plain identity STE of earlier versions, step for step.

Example:
    >>> from autocomp.evaluators import get_evaluator
    >>> ev = get_evaluator("qat", steps=200, estimator="reste", learn_scales=True, distill=1.0)
    >>> ev.evaluate(workload, policy).extras["train_split"]          # doctest: +SKIP
    'train'
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch.nn.utils import parametrize

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.devices import to_device
from autocomp.errors import AutocompError
from autocomp.evaluators._base import DeviceOptions, Evaluator
from autocomp.evaluators._binary import TERNARY_SCALES, BinaryAct
from autocomp.evaluators._distill import FeatureTap, feature_mse, logits_kl
from autocomp.evaluators._estimators import ESTIMATORS, Estimator
from autocomp.evaluators._lsq import ActQuant, QuantWeight
from autocomp.evaluators.ptq import ACT_BITS
from autocomp.metrics import Metrics
from autocomp.modules import call_model, is_embedding, is_transposed
from autocomp.policy import ActFakeQuant, Choice, Policy, input_range
from autocomp.quant import compress_weight, fake_quant_act, is_float
from autocomp.workload import Workload

log = logging.getLogger("autocomp.qat")
_SAID: set[str] = set()   # workloads already told that QAT trains on their calibration batches


def _bad(name: str, what: str, value: Any) -> AutocompError:
    return AutocompError(f"evaluator 'qat': {name} must be {what}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class QATOptions(DeviceOptions):
    """Options of :class:`QATEvaluator`.

    Attributes:
        epochs: passes over the training batches when ``steps`` is None (0: re-calibrate only).
        lr: Adam learning rate.
        seed: torch seed of the fine-tune.
        steps: optimizer steps, cycling over the training batches (None: ``epochs`` passes).
        estimator: the weights' gradient estimator: ``ste`` (identity), ``reste`` (rectified
            power-function STE), ``biper`` (square-wave forward, sine-surrogate backward).
        reste_power: ReSTE's power ``o`` (>= 1; 1 is the STE).
        reste_clamp: ReSTE's bound on the gradient magnitude (> 0).
        biper_freq: BiPer's frequency of the square wave (> 0; 1-bit layers; multi-bit layers
            get the sine surrogate of the rounding residual).
        learn_scales: learn weight steps (per channel or group) and activation step sizes, LSQ
            style, initialised from the PTQ (rtn) result; pruning masks stay fixed.
        distill: weight of the logits KL to the float model (0: no distillation).
        distill_temp: the distillation temperature (> 0).
        distill_features: add the relative MSE of the quantized layers' outputs to the float
            model's, with the same weight (needs ``distill`` > 0).
        ternary_scale: the 1.58-bit step, BitNet b1.58's ``mean`` |w| or the ``median`` |w|.
        salient: PB-LLM fraction of each 1/1.58-bit layer's weights (largest |w|) kept at 8 bits,
            in ``[0, 1)``; the evaluation is stored at its true
            costs, them counted (:mod:`autocomp.salient`).

    ``device`` and ``eval_dtype`` come from :class:`~autocomp.evaluators.DeviceOptions`: the
    fine-tune runs on the device in float32, the scoring under autocast to ``eval_dtype``.
    Binary activations (``a_bits=1``) always learn their threshold and scale.
    """

    epochs: int = 2
    lr: float = 1e-3
    seed: int = 0
    steps: int | None = None
    estimator: str = "ste"
    reste_power: float = 3.0
    reste_clamp: float = 3.0
    biper_freq: float = 1.0
    learn_scales: bool = False
    distill: float = 0.0
    distill_temp: float = 1.0
    distill_features: bool = False
    ternary_scale: str = "mean"
    salient: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_int(self.epochs) or self.epochs < 0:
            raise _bad("epochs", "an integer of 0 or more", self.epochs)
        if not _is_num(self.lr) or self.lr <= 0:
            raise _bad("lr", "a positive number", self.lr)
        if not _is_int(self.seed):
            raise _bad("seed", "an integer", self.seed)
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 0):
            raise _bad("steps", "an integer of 0 or more (or None: epochs passes)", self.steps)
        if self.estimator not in ESTIMATORS:
            raise _bad("estimator", f"one of {', '.join(ESTIMATORS)}", self.estimator)
        if not _is_num(self.reste_power) or self.reste_power < 1:
            raise _bad("reste_power", "a number of 1 or more", self.reste_power)
        for name in ("reste_clamp", "biper_freq", "distill_temp"):
            v = getattr(self, name)
            if not _is_num(v) or v <= 0:
                raise _bad(name, "a positive number", v)
        for name in ("learn_scales", "distill_features"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, "true or false", getattr(self, name))
        if not _is_num(self.distill) or self.distill < 0:
            raise _bad("distill", "a number of 0 or more", self.distill)
        if self.distill_features and self.distill == 0:
            raise _bad("distill_features", "false when distill is 0 (it weighs the feature term)",
                       self.distill_features)
        if self.ternary_scale not in TERNARY_SCALES:
            raise _bad("ternary_scale", f"one of {', '.join(TERNARY_SCALES)}", self.ternary_scale)
        if not _is_num(self.salient) or not 0 <= self.salient < 1:
            raise _bad("salient", "a fraction in [0, 1)", self.salient)
        for name in ("lr", "reste_power", "reste_clamp", "biper_freq", "distill", "distill_temp", "salient"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def plain(self) -> bool:
        """The identity STE on rtn's weights of earlier versions (no option of issue 14 in use)."""
        return (self.estimator == "ste" and not self.learn_scales and self.ternary_scale == "mean"
                and self.salient == 0)

    def estimator_(self) -> Estimator:
        return Estimator(self.estimator, self.reste_power, self.reste_clamp, self.biper_freq)


class QATEvaluator(Evaluator):
    """Fine-tune under the policy, score the model it learned; ``extras`` records how.

    ``extras``: ``epochs``, ``steps`` (optimizer steps taken), ``train_split`` (``train`` or
    ``calib``), ``estimator``, ``learn_scales``.
    """

    name = "qat"
    trains = True
    Options = QATOptions

    def evaluate(self, workload: Workload, policy: Policy) -> Metrics:
        t0 = time.perf_counter()
        o = self.options
        placed = self.prepare(workload)   # on the evaluator's device; the fine-tune runs there in float32
        split, train = training_split(workload)
        if placed is not workload:
            train = [to_device(b, self.device) for b in train] if split == "train" else placed.calib
        res = qat_train(placed.model(), policy, train, placed.calib, placed.loss, o)
        with self.precision():
            quality = placed.evaluate(res.model)
        extras = {"epochs": o.epochs, "steps": res.steps, "train_split": split, "estimator": o.estimator,
                  "learn_scales": o.learn_scales}
        return Metrics(policy.id, float(quality), workload.quality, extras=extras,
                       seconds=time.perf_counter() - t0)


def training_split(workload: Workload) -> tuple[str, Sequence]:
    """(``"train"``, its batches), or (``"calib"``, the calibration batches) said once in one line."""
    train = getattr(workload, "train", None)
    if train is not None and len(train) > 0:
        return "train", train
    if workload.name not in _SAID:
        _SAID.add(workload.name)
        log.warning("qat: workload %r has no training split: fine-tuning on its calibration batches",
                    workload.name)
    return "calib", workload.calib


@dataclass
class QATResult:
    """What :func:`qat_train` returns.

    Attributes:
        model: the compressed model to score (baked weights, input quantization hooks).
        steps: optimizer steps taken.
        scales: per layer, the final weight steps ``[N, G]`` and zero points (None for the plain
            STE's rtn weights and float layers).
    """

    model: torch.nn.Module
    steps: int
    scales: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)


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

    def bake(self, w: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        src = w.detach().t() if self.transposed else w.detach()
        q = compress_weight(src, self.bits, self.prune, self.group, self.zero_point)
        return (q.t() if self.transposed else q), None, None


class _STEAct:
    """Input fake-quant pre-hook with a straight-through gradient."""

    def __init__(self, lo: float, hi: float, bits: int):
        self.lo, self.hi, self.bits = lo, hi, bits

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (x + (fake_quant_act(x, self.lo, self.hi, self.bits) - x).detach(),) + tuple(args[1:])


def _ranges(model: torch.nn.Module, names: Sequence[str], batches: Sequence) -> dict:
    # 1 bit too: the initial levels of binary activations (no other width's range changes)
    return activation_ranges(activation_stats(model, list(names), batches), (1,) + ACT_BITS)


def _weight_param(mod: torch.nn.Module, ch: Choice, o: QATOptions) -> torch.nn.Module:
    if o.plain:
        return _STEWeight(ch, is_transposed(mod))
    return QuantWeight(mod.weight, ch, is_transposed(mod), o.estimator_(), o.learn_scales, o.ternary_scale, o.salient)


def _act_quant(ch: Choice, rng: tuple[float, float], o: QATOptions) -> tuple[Callable, torch.nn.Module | None]:
    """(the training pre-hook, its learnable module or None) of one quantized input."""
    if int(ch.a_bits) == 1 and not ch.per_token:
        q = BinaryAct(*rng)
        return q.hook, q
    if o.learn_scales and not ch.per_token:
        q = ActQuant(rng[0], rng[1], int(ch.a_bits))
        return q.hook, q
    return _STEAct(rng[0], rng[1], int(ch.a_bits)), None


def qat_train(model: torch.nn.Module, policy: Policy, train: Sequence, calib: Sequence, loss: Callable,
              options: QATOptions | None = None) -> QATResult:
    """Fine-tune a copy of ``model`` under ``policy`` on ``train``; the compressed model learned.

    Batch-norm statistics stay frozen (eval mode): a short fine-tune is too short to re-estimate
    them, and PTQ scores the model with the same statistics. Activation ranges are calibrated on
    ``calib``; ``model`` (the teacher when distilling) is never changed.

    Example:
        >>> res = qat_train(wl.model(), policy, wl.train, wl.calib, wl.loss, QATOptions(steps=50))  # doctest: +SKIP
        >>> res.steps                                                                              # doctest: +SKIP
        50
    """
    o = options or QATOptions()
    torch.manual_seed(o.seed)
    m = copy.deepcopy(model).eval()
    names = [n for n, _ in policy.layers]
    ranges = _ranges(m, names, calib)
    modules = dict(m.named_modules())
    device = next(m.parameters()).device
    hooks, act_q, extra = [], {}, []
    for name, ch in policy.layers:
        mod = modules[name]
        if not is_float(ch.w_bits) or ch.prune > 0:
            parametrize.register_parametrization(mod, "weight", _weight_param(mod, ch, o))
        rng = None if is_embedding(mod) else input_range(ranges, name, ch)   # TOKEN_RANGE when per token
        if rng is not None:
            hook, q = _act_quant(ch, rng, o)
            hooks.append(mod.register_forward_pre_hook(hook))
            if q is not None:
                q.to(device)   # its learnable steps live where the model trains
                act_q[name] = q
                extra.extend(q.parameters())
    n_steps = o.steps if o.steps is not None else o.epochs * len(train)
    _fit(m, model, names, train, loss, o, n_steps, extra)
    for h in hooks:
        h.remove()
    return _compressed(m, policy, calib, act_q, n_steps)


def _fit(m: torch.nn.Module, teacher: torch.nn.Module, names: Sequence[str], train: Sequence, loss: Callable,
         o: QATOptions, n_steps: int, extra: list) -> None:
    if n_steps <= 0 or not len(train):
        return
    params = [p for p in m.parameters() if p.requires_grad] + extra
    opt = torch.optim.Adam(params, lr=o.lr)
    feats = o.distill_features and o.distill > 0
    with contextlib.ExitStack() as stack:
        s_tap = stack.enter_context(FeatureTap(m, names)) if feats else None
        t_tap = stack.enter_context(FeatureTap(teacher, names)) if feats else None
        for x, y in itertools.islice(itertools.cycle(train), n_steps):
            opt.zero_grad()
            out = call_model(m, x)
            total = loss(out, y)
            if o.distill > 0:
                with torch.no_grad():
                    t_out = call_model(teacher, x)
                kd = logits_kl(out, t_out, o.distill_temp)
                if feats:
                    kd = kd + feature_mse(s_tap.take(), t_tap.take())
                total = total + o.distill * kd
            total.backward()
            opt.step()


def _compressed(m: torch.nn.Module, policy: Policy, calib: Sequence, act_q: dict, n_steps: int) -> QATResult:
    """Bake the trained weights and install the inputs' final quantizers, in place on ``m``."""
    modules = dict(m.named_modules())
    baked: dict[str, tuple] = {}
    for name, _ in policy.layers:
        mod = modules[name]
        if parametrize.is_parametrized(mod, "weight"):
            p = mod.parametrizations.weight
            baked[name] = p[0].bake(p.original)
            # the latent float weights first: ranges that are not learned are re-calibrated on them
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
    ranges = _ranges(m, [n for n, _ in policy.layers], calib)
    scales = {}
    with torch.no_grad():
        for name, (w, s, z) in baked.items():
            modules[name].weight.copy_(w)
            if s is not None:
                scales[name] = (s, z)
    for name, ch in policy.layers:
        mod = modules[name]
        if name in act_q:
            mod.register_forward_pre_hook(act_q[name].frozen())
            continue
        rng = None if is_embedding(mod) else input_range(ranges, name, ch)
        if rng is not None:
            mod.register_forward_pre_hook(ActFakeQuant(rng[0], rng[1], int(ch.a_bits)))
    return QATResult(m.eval(), n_steps, scales)


def qat_finetune(model: torch.nn.Module, policy: Policy, batches: Sequence, loss: Callable, epochs: int = 2,
                 lr: float = 1e-3, seed: int = 0, **options: Any) -> torch.nn.Module:
    """The compressed model of :func:`qat_train` trained and calibrated on ``batches``.

    Example:
        >>> small = qat_finetune(wl.model(), policy, wl.calib, wl.loss, epochs=1)   # doctest: +SKIP
    """
    o = QATOptions(epochs=epochs, lr=lr, seed=seed, **options)
    return qat_train(model, policy, batches, batches, loss, o).model
