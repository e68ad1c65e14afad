"""Stage ``export``: one stored policy written in a deployable format (:mod:`autocomp.export`).

Everything a user can get wrong is checked before the model is loaded or a byte is written: the
format (and the optional packages it needs), the policy id, the output (an existing non-empty
directory is refused unless ``force``; its parent must exist and be writable), the consent to
import a stored ``file.py:`` model spec (:func:`autocomp.stages.validate.model_spec_to_run`).
The writer then fills a temporary directory (or file) next to the output, renamed onto it when
complete: an interrupted or failed export leaves the output as it was.

Example:
    >>> line = export_policy(Store("sqlite:///s.db"), "first", "2cd4", "checkpoint", Path("ckpt"))  # doctest: +SKIP
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from autocomp.arch import check_model_export
from autocomp.errors import AutocompError
from autocomp.export import ExportFormat, ExportJob, export_format
from autocomp.policy import Policy


def policy_document(study: str, info) -> dict:
    """The policy JSON ``front export`` writes: the versioned policy plus its study record."""
    policy = Policy.from_dict(info.policy)
    return {**policy.to_dict(), "study": study, "source": info.source, "label": info.label, "costs": info.costs}


def check_output(fmt: ExportFormat, output: Path, force: bool) -> Path:
    """``output`` resolved, or one error line: parent missing or not writable, a non-empty directory."""
    out = Path(output).expanduser()
    parent = out.resolve().parent
    if not parent.is_dir():
        raise AutocompError(f"cannot write {out}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AutocompError(f"cannot write {out}: directory {str(parent)!r} is not writable")
    if fmt.directory:
        if out.exists() and not out.is_dir():
            raise AutocompError(f"cannot write {out}: it exists and is not a directory")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise AutocompError(f"{out} exists and is not empty: pass --force to replace it")
    elif out.is_dir():
        raise AutocompError(f"cannot write --output {out}: it is a directory")
    return out


def _front_point(store, study, policy_id: str) -> dict | None:
    from autocomp.report import front

    keep = ("quality", "quality_metric", "size", "bitops", "avg_bits", "latency", "on_front", "label")
    for p in front(store, study, kind="ptq"):   # the weights written are the PTQ ones
        if p["policy_id"] == policy_id:
            return {k: p.get(k) for k in keep}
    return None


def _trained_note(store, study, policy_id: str) -> str:
    """What a checkpoint of ``policy_id`` does not hold: the weights of a QAT (or NAS) trial that
    measured better than its PTQ evaluation (``front show`` shows that quality), or '' when none."""
    from autocomp.report import study_points

    p = next((q for q in study_points(store, study, kind=None) if q["policy_id"] == policy_id), None)
    if p is None or p["kind"] == "ptq":
        return ""
    ptq = f"{p['ptq_quality']:.4f}" if "ptq_quality" in p else "not evaluated"
    return (f" (PTQ weights, {p['quality_metric']} {ptq}: the {p['kind'].upper()} trial's trained weights "
            f"({p['quality']:.4f}) are not exported)")


def _move_into_place(tmp: Path, out: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    # mkdtemp makes a private directory; the output gets the modes a plain mkdir / open would
    for p in [tmp, *tmp.rglob("*")] if tmp.is_dir() else [tmp]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
    if out.exists():
        # rename the old output away first: at every moment one complete version exists
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_policy(store, study_name: str, policy_id: str, fmt: str, output: Path, force: bool = False,
                  model: str | None = None, trust_stored_model: bool = False, apply: bool = False) -> str:
    """Write policy ``policy_id`` of study ``study_name`` as ``fmt`` to ``output``; returns the summary line.

    Args:
        store: the study database (read only).
        policy_id: a policy id or a unique prefix.
        fmt: a registered export format (``policy``, ``checkpoint``, ...).
        output: a file (``policy``) or a directory (``checkpoint``); replaced only with ``force``
            when it is a non-empty directory.
        model: the model spec to load instead of the study's stored one.
        trust_stored_model: import a stored spec that is neither built in nor given as ``model``.
        apply: ``torchao``: also write the model ``torchao.quantization.quantize_`` built.
    """
    from autocomp.evaluators.ptq import build_quantizer
    from autocomp.stages.validate import model_spec_to_run

    kind = export_format(fmt)
    if apply and kind.name != "torchao":
        raise AutocompError(f"--apply is for --format torchao, not {kind.name!r}")
    kind.check_available()
    out = check_output(kind, output, force)
    study = store.get_study(study_name)
    info = store.get_policy(study, policy_id)
    policy = Policy.from_dict(info.policy)
    check_model_export(policy, kind.name, kind.needs_model)   # a NAS candidate's weights are not stored
    job = ExportJob(study_name, policy, policy_document(study_name, info), model_spec=study.config.get("model"),
                    apply=apply, full_size="file_layout" in study.config)
    if kind.needs_model:
        spec = model_spec_to_run(job.model_spec, model, trust_stored_model)
        from autocomp.quantizers.per_layer import for_policy

        # layers whose choice names its quantizer (w4a8@gptq) take that one, as evaluated
        quantizer = for_policy(build_quantizer(study.config.get("quantizer") or "rtn"), policy)
        job.front_point = _front_point(store, study, info.policy_id)
        _load_model(job, spec, quantizer)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    target = tmp if kind.directory else tmp / out.name
    try:
        line = kind.write(job, target)
        _move_into_place(target, out)
    except OSError as e:
        raise AutocompError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return f"{line} to {out}" + (_trained_note(store, study, info.policy_id) if kind.needs_model else "")


def _load_model(job: ExportJob, spec: str, quantizer) -> None:
    """The float model, its calibrated activation ranges and the quantizer's statistics, as the
    PTQ evaluation computed them."""
    from autocomp.calibrate import activation_ranges, activation_stats
    from autocomp.evaluators.ptq import ACT_BITS
    from autocomp.modules import activation_layers
    from autocomp.quantizers import collect_stats
    from autocomp.workload import load_workload

    workload = load_workload(spec)
    model = workload.model().eval()
    names = [n for n, _ in activation_layers(model)]
    job.workload, job.model, job.quantizer = workload, model, quantizer
    job.act_ranges = activation_ranges(activation_stats(model, names, workload.calib), ACT_BITS)
    job.stats = collect_stats(model, workload.calib, names, quantizer.needs)
