"""Export formats, registered by name: what ``autocomp front export --format NAME`` writes.

``policy`` (the policy as versioned JSON, one file) and ``checkpoint`` (autocomp's compressed
checkpoint, a directory: :mod:`autocomp.export.checkpoint`). A format is an
:class:`ExportFormat`: a writer ``"module:function"`` imported on first use, whether it writes a
directory or one file, whether it needs the model, and the optional packages it needs, checked
before anything is loaded or written (a missing one is one line naming the extra to install).

The writer is called as ``writer(job, path) -> str`` with an :class:`ExportJob` and a fresh
temporary path (an empty directory, or a file name) next to the output; the stage renames it to
the output when the writer returns, so a failure leaves nothing half-written. It returns a
one-line summary for the user.

Example:
    >>> from autocomp.export import export_format, list_formats
    >>> "checkpoint" in list_formats(), export_format("checkpoint").directory
    (True, True)
    >>> export_format("tarball")                       # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: unknown export format 'tarball': choose from ...
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from autocomp.errors import AutocompError
from autocomp.policy import Policy
from autocomp.registry import Registry


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: the ``--format`` word.
        writer: ``"module:function"``, called as ``writer(job, path) -> str``.
        description: one line for ``--help``.
        directory: writes a directory (``-o DIR``) rather than one file.
        needs_model: the job must carry the float model, its calibrated ranges and the quantizer.
        requires: import names of optional packages -> the extra that installs them.
    """

    name: str
    writer: str
    description: str
    directory: bool = True
    needs_model: bool = True
    requires: Mapping[str, str] = field(default_factory=dict)

    def check_available(self) -> None:
        """Raise one line naming the extra when a package the format needs is not installed."""
        for module, extra in self.requires.items():
            if importlib.util.find_spec(module) is None:
                raise AutocompError(f"export format {self.name!r} needs {module}, which is not installed: "
                                    f"pip install 'autocomp[{extra}]'")

    def write(self, job: "ExportJob", path: Path) -> str:
        """Run the writer (importing it now)."""
        self.check_available()
        mod, _, attr = self.writer.partition(":")
        fn: Callable[[ExportJob, Path], str] = getattr(importlib.import_module(mod), attr)
        return fn(job, path)


@dataclass
class ExportJob:
    """What a writer gets: the policy and its study's record, and (``needs_model``) the model.

    Attributes:
        study: the study's name.
        policy: the policy exported.
        policy_doc: the policy JSON as ``front export`` writes it (policy, study, source, label, costs).
        front_point: the policy's point as ``front show --json`` lists it (quality, costs), or None.
        model_spec: the model spec stored with the study.
        model: the float model (eval mode), or None.
        act_ranges: per layer per activation bit-width the calibrated input range.
        quantizer: the study's quantizer (:func:`autocomp.quantizers.get_quantizer`).
        stats: the quantizer's calibration statistics (``{}`` when it needs none).
        workload: the workload the model came from, or None.
        full_size: the study's ``size`` counts every stored scale, pruned position and buffer
            (studies created before checkpoints existed count codes and group metadata only).
    """

    study: str
    policy: Policy
    policy_doc: dict
    front_point: dict | None = None
    model_spec: str | None = None
    model: Any = None
    act_ranges: Mapping[str, Mapping[int, tuple[float, float]]] | None = None
    quantizer: Any = None
    stats: Mapping[str, Any] = field(default_factory=dict)
    workload: Any = None
    apply: bool = False     # --apply: torchao also writes the model it quantized
    full_size: bool = True


_FORMATS: Registry[ExportFormat] = Registry("export format")


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Register ``fmt`` under its name (replacing one of that name)."""
    _FORMATS.register(fmt.name, fmt)
    return fmt


def export_format(name: str) -> ExportFormat:
    """The format registered as ``name`` (unknown: one error line listing the formats)."""
    return _FORMATS.get(name)


def list_formats() -> list[str]:
    return _FORMATS.names()


register_format(ExportFormat("policy", "autocomp.export.policy_json:write_policy_json",
                             "the policy as versioned JSON (one file)", directory=False, needs_model=False))
register_format(ExportFormat("checkpoint", "autocomp.export.checkpoint:write_checkpoint",
                             "compressed weights (safetensors) + policy.json + manifest.json"))
register_format(ExportFormat("torchao", "autocomp.export.torchao_export:write_torchao",
                             "torchao configs per layer (JSON); with --apply, torchao's quantized model",
                             requires={"torchao": "torchao", "safetensors": "torchao"}))
register_format(ExportFormat("onnx", "autocomp.export.onnx_export:write_onnx",
                             "ONNX with QuantizeLinear / DequantizeLinear per layer, checked by onnxruntime",
                             requires={"onnx": "onnx", "onnxruntime": "onnx"}))
