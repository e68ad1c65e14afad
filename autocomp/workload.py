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
            out = _logits(call_model(model, x))
            correct += int((out.argmax(dim=-1) == y).sum())
            total += int(y.numel())
    return correct / max(total, 1)


def cross_entropy(output: Any, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(_logits(output), target)


def _logits(output: Any) -> torch.Tensor:
    """Accept plain tensors and HuggingFace-style outputs with ``.logits``."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot read logits from {type(output).__name__}")


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
    """

    name: str
    model_factory: Callable[[], torch.nn.Module]
    calib: Sequence[Batch]
    eval: Sequence[Batch]
    metric: Callable[[torch.nn.Module, Sequence[Batch]], float] = top1_accuracy
    loss: Callable[[Any, torch.Tensor], torch.Tensor] = cross_entropy
    spec: str = ""
    quality: str = "accuracy"
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
}


def register_builtin(name: str, target: str) -> None:
    """Register a built-in workload name pointing at ``module:factory``."""
    BUILTIN[name] = target


def load_workload(spec: str) -> Workload:
    """Resolve ``--model``: a built-in name, ``package.module:factory`` or ``path/file.py:factory``.

    Raises:
        ModelSpecError: with a one-line reason when the spec cannot be loaded.
    """
    spec = (spec or "").strip()
    if not spec:
        raise ModelSpecError("empty --model spec")
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
