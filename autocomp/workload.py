"""Workloads: what a search compresses and how it is scored.

A workload bundles a trained model factory, calibration batches, evaluation batches, an
evaluation metric (top-1 accuracy by default; ``quality`` names it in :mod:`autocomp.metrics`, which
gives its direction, e.g. ``perplexity`` is lower-is-better) and the training loss. Users point
``--model`` at a factory returning a :class:`Workload`::

    # my_models.py
    from autocomp.workload import Workload
    def make() -> Workload:
        return Workload(name="mine", model_factory=load_my_trained_model,
                        calib=[(x0, y0), (x1, y1)], eval=[(xt, yt)])

    $ autocomp search --model my_models.py:make        # or --model my_pkg.my_models:make
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from autocomp.devices import to_device
from autocomp.errors import AutocompError, ModelSpecError
from autocomp.metrics import get_quality_metric
from autocomp.modules import batch_size, call_model

Batch = tuple[Any, torch.Tensor]


def top1_accuracy(model: torch.nn.Module, batches: Sequence[Batch]) -> float:
    """Fraction of samples whose arg-max logit equals the label."""
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in batches:
            out = output_tensor(call_model(model, x))
            correct += int((out.argmax(dim=-1) == y).sum())
            total += int(y.numel())
    return correct / max(total, 1)


def cross_entropy(output: Any, target: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy of the logits against the targets.

    Class logits ``[B, C]`` take labels ``[B]``. A causal LM's logits ``[B, T, V]`` take the
    sequence's token ids ``[B, T]`` (Hugging Face's ``labels`` convention): position ``t``
    predicts token ``t + 1``, so both are shifted by one and flattened; ids ``-100`` (padding)
    are ignored.

    Example:
        >>> logits = torch.zeros(2, 5, 7)                        # uniform over 7 tokens
        >>> round(float(cross_entropy(logits, torch.ones(2, 5, dtype=torch.long)).exp()), 3)
        7.0
    """
    logits = output_tensor(output)
    target = target.to(logits.device)
    if logits.dim() == 3 and target.dim() == 2:
        shifted, labels = _shift(logits, target)
        return torch.nn.functional.cross_entropy(shifted.float(), labels, ignore_index=IGNORE_INDEX)
    return torch.nn.functional.cross_entropy(logits, target)


IGNORE_INDEX = -100  # Hugging Face's label for positions that are not scored (padding)


def _shift(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of positions ``0..T-2`` and the ids they predict (``1..T-1``), flattened."""
    return logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)


def token_nll(model: torch.nn.Module, batches: Sequence[Batch]) -> tuple[float, int]:
    """Summed next-token cross-entropy and the number of scored tokens over ``batches``.

    Targets are the batch's token ids (``-100`` where nothing is scored, e.g. padding).
    """
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for x, y in batches:
            logits = output_tensor(call_model(model, to_device(x, _device(model))))
            shifted, labels = _shift(logits, y.to(logits.device))
            total += float(torch.nn.functional.cross_entropy(shifted.float(), labels, ignore_index=IGNORE_INDEX,
                                                             reduction="sum"))
            count += int((labels != IGNORE_INDEX).sum())
    return total, count


def mean_token_loss(model: torch.nn.Module, batches: Sequence[Batch]) -> float:
    """Mean next-token cross-entropy (nats) over every scored token of ``batches`` (metric ``loss``)."""
    total, count = token_nll(model, batches)
    return total / max(count, 1)


def perplexity(model: torch.nn.Module, batches: Sequence[Batch]) -> float:
    """``exp`` of the mean next-token cross-entropy over every scored token (metric ``perplexity``).

    Tokens are pooled across batches (not a mean of per-batch perplexities), so the value does
    not depend on how the evaluation set is batched.

    Example:
        >>> class Uniform(torch.nn.Module):
        ...     def forward(self, ids):
        ...         return torch.zeros(*ids.shape, 11)
        >>> ids = torch.zeros(2, 6, dtype=torch.long)
        >>> round(perplexity(Uniform(), [(ids, ids)]), 3)
        11.0
    """
    import math

    return math.exp(mean_token_loss(model, batches))


def token_cosine(output: Any, reference: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cosine similarity between ``output``'s and ``reference``'s vectors (last dim) and
    their number: one vector per token for ``[B, T, H]`` outputs, per sample for ``[B, H]``."""
    out = output_tensor(output)
    ref = reference.to(out.device)
    cos = torch.nn.functional.cosine_similarity(out.float().reshape(-1, out.shape[-1]),
                                                ref.float().reshape(-1, ref.shape[-1]), dim=-1)
    return cos.sum(), int(cos.numel())


def cosine_fidelity(model: torch.nn.Module, batches: Sequence[Batch]) -> float:
    """Mean cosine similarity, in ``[-1, 1]``, of the model's output vectors to the fp32 model's
    (metric ``cosine``): the batches' targets are the fp32 outputs, for encoders without labels.

    Example:
        >>> m = torch.nn.Linear(3, 3)
        >>> x = torch.randn(4, 3)
        >>> round(cosine_fidelity(m, [(x, m(x).detach())]), 4)
        1.0
    """
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for x, ref in batches:
            s, n = token_cosine(call_model(model, to_device(x, _device(model))), ref)
            total, count = total + float(s), count + n
    return total / max(count, 1)


def cosine_loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean cosine`` to the fp32 outputs: the loss gradient proxies use for an encoder."""
    s, n = token_cosine(output, target)
    return 1.0 - s / max(n, 1)


def output_tensor(output: Any) -> torch.Tensor:
    """The tensor a model's output holds: itself, a Hugging Face output's ``.logits`` (else its
    ``.last_hidden_state``), or a tuple's first element.

    Example:
        >>> tuple(output_tensor((torch.zeros(2, 3), "extra")).shape)
        (2, 3)
    """
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "logits", None) is not None:
        return output.logits
    if getattr(output, "last_hidden_state", None) is not None:
        return output.last_hidden_state
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot read logits from {type(output).__name__}")


def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class Workload:
    """A model to compress with its data.

    Attributes:
        name: short name stored with the study.
        model_factory: returns the trained float model (called once per process, then cached).
        calib: calibration batches ``(inputs, targets)``; inputs a tensor, tuple or dict.
        eval: evaluation batches, same form.
        metric: ``metric(model, batches) -> float``; top-1 accuracy by default.
        loss: ``loss(output, target) -> scalar tensor`` used by gradient-based proxies.
        spec: the ``--model`` string that loads this workload again in another process.
        quality: what ``metric`` measures: a quality metric name of :mod:`autocomp.metrics`
            (``accuracy``, ``perplexity``, ``loss``, ...), which gives its direction.
        train: optional training batches, disjoint from ``calib`` and ``eval``, that training
            evaluators (``qat``) fine-tune on; None: they fall back to ``calib`` (and say so).
    """

    name: str
    model_factory: Callable[[], torch.nn.Module]
    calib: Sequence[Batch]
    eval: Sequence[Batch]
    metric: Callable[[torch.nn.Module, Sequence[Batch]], float] = top1_accuracy
    loss: Callable[[Any, torch.Tensor], torch.Tensor] = cross_entropy
    spec: str = ""
    quality: str = "accuracy"
    train: Sequence[Batch] | None = field(default=None, repr=False)
    _model: torch.nn.Module | None = field(default=None, repr=False)

    def model(self) -> torch.nn.Module:
        """The trained float model in eval mode (built once, then shared: copy before changing)."""
        if self._model is None:
            m = self.model_factory()
            if not isinstance(m, torch.nn.Module):
                raise ModelSpecError(f"workload {self.name!r}: model_factory returned {type(m).__name__}, not a torch.nn.Module")
            self._model = m.eval()
        return self._model

    def sample_input(self) -> Any:
        """The inputs of the first calibration batch (used for profiling)."""
        return self.calib[0][0]

    def evaluate(self, model: torch.nn.Module) -> float:
        return float(self.metric(model, self.eval))


BUILTIN = {
    "digits": "autocomp.workloads.digits:digits",
    "digits-vit": "autocomp.workloads.digits_vit:digits_vit",
    "tiny-lm": "autocomp.workloads.tiny_lm:tiny_lm",
}
HF_PREFIX = "hf:"  # ``hf:PATH?data=FILE&task=...``: a local Hugging Face model (autocomp.workloads.hf)
HF_LOADER = "autocomp.workloads.hf:hf_workload"


def register_builtin(name: str, target: str) -> None:
    """Register a built-in workload name pointing at ``module:factory``."""
    BUILTIN[name] = target


def load_workload(spec: str) -> Workload:
    """Resolve ``--model``: a built-in name, ``hf:PATH?...`` (a local Hugging Face model directory,
    see :mod:`autocomp.workloads.hf`), ``package.module:factory`` or ``path/file.py:factory``.

    Raises:
        ModelSpecError: with a one-line reason when the spec cannot be loaded.
    """
    spec = (spec or "").strip()
    if not spec:
        raise ModelSpecError("empty --model spec")
    if spec.startswith(HF_PREFIX):
        mod_part, _, attr = HF_LOADER.rpartition(":")
        wl = getattr(importlib.import_module(mod_part), attr)(spec[len(HF_PREFIX):])
        wl.spec = spec
        return wl
    target = BUILTIN.get(spec, spec)
    if ":" not in target:
        raise ModelSpecError(
            f"unknown model {spec!r}: use a built-in ({', '.join(sorted(BUILTIN))}), "
            "package.module:factory or path/to/file.py:factory")
    mod_part, _, attr = target.rpartition(":")
    module = _import(mod_part, spec)
    obj = getattr(module, attr, None)
    if obj is None:
        raise ModelSpecError(f"model spec {spec!r}: {mod_part!r} has no attribute {attr!r}")
    try:
        wl = obj() if callable(obj) and not isinstance(obj, Workload) else obj
    except ModelSpecError:
        raise
    except SystemExit as e:  # a factory calling sys.exit must not end autocomp silently
        raise ModelSpecError(f"model spec {spec!r}: factory called sys.exit({e.code!r})") from e
    except Exception as e:  # the user's factory failed: say so in one line
        raise ModelSpecError(f"model spec {spec!r}: factory raised {type(e).__name__}: {e}") from e
    if not isinstance(wl, Workload):
        raise ModelSpecError(f"model spec {spec!r}: factory must return autocomp.workload.Workload, got {type(wl).__name__}")
    try:
        get_quality_metric(wl.quality)
    except AutocompError as e:
        raise ModelSpecError(f"model spec {spec!r}: workload {wl.name!r}: {e}") from None
    wl.spec = spec
    return wl


def validate_workload(wl: Workload) -> torch.nn.Module:
    """Check a workload once, up front: builds its model and runs one calibration batch.

    Returns the model. Raises :class:`ModelSpecError` naming the part that failed (the model
    factory, the calibration or evaluation batches, the forward pass), so that a bad workload
    stops a search before any study is written or worker started.

    Example:
        >>> import torch
        >>> wl = Workload("w", lambda: torch.nn.Linear(2, 2), calib=[], eval=[])
        >>> validate_workload(wl)
        Traceback (most recent call last):
        ...
        autocomp.errors.ModelSpecError: workload 'w': no calibration batches (calib is empty)
    """
    where = f"workload {wl.name!r}"
    try:
        model = wl.model()
    except ModelSpecError:
        raise
    except (Exception, SystemExit) as e:  # the user's loader, e.g. torch.load of a missing file
        raise ModelSpecError(f"{where}: model_factory raised {type(e).__name__}: {_one_line(e)}") from e
    for part in ("calib", "eval"):
        batches = getattr(wl, part)
        try:
            n = len(batches)
        except TypeError:
            raise ModelSpecError(f"{where}: {part} must be a sequence of (inputs, targets) batches, "
                                 f"got {type(batches).__name__}") from None
        if n == 0:
            raise ModelSpecError(f"{where}: no {'calibration' if part == 'calib' else 'evaluation'} batches ({part} is empty)")
        for i, b in enumerate(batches):
            if not isinstance(b, (tuple, list)) or len(b) != 2:
                raise ModelSpecError(f"{where}: {part}[{i}] must be an (inputs, targets) pair")
            try:
                size = batch_size(b[0])
            except (TypeError, IndexError, StopIteration, AttributeError) as e:
                raise ModelSpecError(f"{where}: {part}[{i}] inputs: {_one_line(e)}") from e
            if size == 0:
                raise ModelSpecError(f"{where}: {part}[{i}] is an empty batch (batch size 0)")
    try:
        with torch.no_grad():
            call_model(model, wl.sample_input())
    except (Exception, SystemExit) as e:
        raise ModelSpecError(f"{where}: the forward pass on calib[0] raised {type(e).__name__}: {_one_line(e)}") from e
    return model


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def _import(mod_part: str, spec: str):
    if mod_part.endswith(".py") or os.sep in mod_part or "/" in mod_part:
        path = Path(mod_part).expanduser().resolve()
        if not path.is_file():
            raise ModelSpecError(f"model spec {spec!r}: no such file {str(path)!r}")
        name = f"autocomp_user_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
        sp = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(sp)
        sys.modules[name] = module
        try:
            sp.loader.exec_module(module)
        except SystemExit as e:  # e.g. a script's argparse or `sys.exit()` at import time
            del sys.modules[name]
            raise ModelSpecError(f"model spec {spec!r}: importing {path.name} called sys.exit({e.code!r})") from e
        except Exception as e:
            del sys.modules[name]
            raise ModelSpecError(f"model spec {spec!r}: importing {path.name} raised {type(e).__name__}: {e}") from e
        return module
    try:
        return importlib.import_module(mod_part)
    except SystemExit as e:
        raise ModelSpecError(f"model spec {spec!r}: importing {mod_part!r} called sys.exit({e.code!r})") from e
    except Exception as e:
        raise ModelSpecError(f"model spec {spec!r}: cannot import {mod_part!r} ({type(e).__name__}: {e})") from e
