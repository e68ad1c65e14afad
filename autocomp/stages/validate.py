"""Stage ``validate``: a study's winners on real low-bit kernels (numerics against the simulation,
latency against fp32 on the same device), each report written into the study as it is measured.

Example:
    >>> reports = validate_study(Store(), "first", device="cpu", repeats=20)   # doctest: +SKIP
    >>> all(r.ok for r in reports)                                              # doctest: +SKIP
    True
"""
from __future__ import annotations

from typing import Callable, Sequence

from autocomp.calibrate import activation_ranges, activation_stats
from autocomp.evaluators.ptq import build_quantizer
from autocomp.errors import AutocompError
from autocomp.kernels.timing import resolve_device
from autocomp.kernels.validate import ACT_BITS, ValidationReport, validate_policy
from autocomp.modules import activation_layers
from autocomp.policy import Policy
from autocomp.quantizers import collect_stats
from autocomp.report import front
from autocomp.workload import BUILTIN, load_workload


def model_spec_to_run(stored: str | None, model: str | None = None, trust_stored: bool = False) -> str:
    """The model spec ``validate`` may load: the user's ``model``, a built-in, or a trusted stored one.

    A study database can be shared (PostgreSQL on a cluster): whoever can write it chooses the
    stored spec, and importing ``file.py:factory`` or ``package.module:factory`` runs that code.
    Built-in workloads are ours and safe; anything else runs only when the user names it
    (``model``) or says the stored one is trusted.

    Example:
        >>> model_spec_to_run("digits")
        'digits'
        >>> model_spec_to_run("/tmp/m.py:make", trust_stored=True)
        '/tmp/m.py:make'
        >>> model_spec_to_run("/tmp/m.py:make")
        Traceback (most recent call last):
        ...
        autocomp.errors.AutocompError: the study's model is '/tmp/m.py:make' (file /tmp/m.py): importing it runs its code; name the model with --model SPEC, or pass --trust-stored-model
    """
    if model:
        return model
    spec = stored or "digits"
    if spec in BUILTIN or trust_stored:
        return spec
    head = spec.rpartition(":")[0] or spec
    where = f"file {head}" if head.endswith(".py") else f"module {head}"
    raise AutocompError(f"the study's model is {spec!r} ({where}): importing it runs its code; name the model "
                        "with --model SPEC, or pass --trust-stored-model")


def validate_study(store, study_name: str, policy_ids: Sequence[str] | None = None, device: str = "auto",
                   repeats: int = 20, on_report: Callable[[ValidationReport], None] | None = None,
                   model: str | None = None, trust_stored_model: bool = False, backend: str = "autocomp",
                   on_compare: Callable | None = None) -> list[ValidationReport]:
    """Validate a study's front (or ``policy_ids``) and write the figures into its evaluations.

    The kernels run the weights of the study's quantizer (its config's ``quantizer``: ``gptq``,
    ``awq+bias_correction``, ...; rtn when none): each policy is compressed by it as the PTQ
    evaluation did, statistics collected once, and the kernel modules get the codes of those
    weights (:func:`autocomp.kernels.from_quantizer.convert_quantized`); the stored figures then
    name it (``kernel_quantizer``). ``backend="torchao"`` gives torchao the same quantizer's weights.

    The model is ``model`` when given, else the study's stored spec: a built-in, or any other
    only with ``trust_stored_model`` (see :func:`model_spec_to_run`).

    Each report is persisted as soon as it is measured (``Store.update_evaluation`` on the
    ``ptq`` evaluation: ``latency`` in seconds, plus ``latency_ms``, ``speedup``,
    ``kernel_max_rel_err``, ``device`` ...). ``backend="torchao"`` also runs each policy on torchao's
    kernels (:func:`autocomp.kernels.torchao_backend.compare_backends`, same device, same run),
    stores the ``torchao_*`` figures and passes each comparison to ``on_compare``.
    """
    if backend not in ("autocomp", "torchao"):
        raise AutocompError(f"unknown validation backend {backend!r}: use autocomp or torchao")
    if backend == "torchao":
        from autocomp.kernels.torchao_backend import require_torchao

        require_torchao()
    dev = resolve_device(device)
    study = store.get_study(study_name)
    spec = model_spec_to_run(study.config.get("model"), model, trust_stored_model)
    if policy_ids:
        infos = [store.get_policy(study, pid) for pid in policy_ids]
    else:
        ids = [p["policy_id"] for p in front(store, study, kind="ptq")]   # kernels run the PTQ weights
        if "latency" in study.config.get("front_costs", []):
            # The front is ranked on latency: measure every policy, or measured whole-model times
            # would be ranked against per-layer table sums.
            ids = [e.policy_id for e in store.list_evaluations(study)]
        if not ids:
            raise AutocompError(f"study {study_name!r} has no evaluated policies to validate: run `autocomp search` first")
        infos = [store.get_policy(study, pid) for pid in ids]
    evaluated = store.evaluated_ids(study)
    missing = [i.policy_id for i in infos if i.policy_id not in evaluated]
    if missing:
        raise AutocompError(f"policy {missing[0]} of study {study_name!r} has no PTQ evaluation yet: "
                            f"run `autocomp search --study {study_name}` first")
    quantizer = build_quantizer(study.config.get("quantizer") or "rtn")
    workload = load_workload(spec)
    model = workload.model()
    names = [n for n, _ in activation_layers(model)]  # not embeddings: their inputs are ids
    ranges = activation_ranges(activation_stats(model, names, workload.calib), ACT_BITS)
    # the statistics the PTQ evaluation used, once for every policy (none for rtn)
    stats = collect_stats(model, workload.calib, names, quantizer.needs)
    sample = workload.sample_input()
    # A latency the search stored came from the per-layer table: keep it next to the measurement.
    estimated = {e.policy_id: e.latency for e in store.list_evaluations(study)
                 if e.latency is not None and "device" not in e.extra}
    reports = []
    for info in infos:
        pol = Policy.from_dict(info.policy)
        sim, results = None, None
        if quantizer.spec == "rtn":   # convert's own rtn codes: the simulation is autocomp.policy.apply
            rep = validate_policy(model, pol, ranges, sample, dev, repeats, workload.metric, workload.eval)
        else:
            results = {}
            sim = quantizer.apply(model, pol, ranges, stats, batches=workload.calib, results=results)
            rep = validate_policy(model, pol, ranges, sample, dev, repeats, workload.metric, workload.eval,
                                  sim=sim, results=results)
        fields = rep.store_fields()
        if quantizer.spec != "rtn":
            fields["kernel_quantizer"] = quantizer.spec
        if info.policy_id in estimated:
            fields["latency_table_ms"] = estimated[info.policy_id] * 1e3
        if backend == "torchao":
            from autocomp.kernels.torchao_backend import compare_backends

            cmp = compare_backends(model, pol, ranges, sample, dev, repeats, sim=sim, results=results)
            fields.update(cmp.store_fields())
            if on_compare is not None:
                on_compare(cmp)
        store.update_evaluation(study, info.policy_id, kind="ptq", **fields)
        reports.append(rep)
        if on_report is not None:
            on_report(rep)
    return reports
