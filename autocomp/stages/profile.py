"""Stage ``profile``: the workload's layers and cost model, checked against the budget, and their
record in the study.

Example:
    >>> ctx = profile(load_workload("digits"), parse_budget("size<=25%"), load_space("mixed_precision"))  # doctest: +SKIP
    >>> record_profile(store, study, ctx)                                                                  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Sequence

from autocomp.allocators import check_feasible
from autocomp.budget import Budget
from autocomp.errors import AutocompError, InfeasibleBudget
from autocomp.progress import Stages
from autocomp.layout import file_layout
from autocomp.profile import model_param_count, profile_model
from autocomp.search_spaces import SearchSpace
from autocomp.stages.context import StudyContext, make_context
from autocomp.store import Store
from autocomp.store.repository import StudyInfo
from autocomp.workload import Workload


def profile(workload: Workload, budget: Budget, space: SearchSpace, latency_table: Any = None) -> StudyContext:
    """Profile ``workload``'s model and resolve ``budget`` on it; writes nothing.

    Raises:
        AutocompError: the model has no compressible layer.
        InfeasibleBudget: the budget is below what the space can reach (the message names the minimum).
    """
    model = workload.model()
    layers = profile_model(model, workload.sample_input())
    if not layers:
        raise AutocompError(f"model {workload.spec or workload.name!r} has no Conv1d/Conv2d/Linear layer to compress")
    ctx = make_context(workload.spec or workload.name, layers, space, budget, model_param_count(model),
                       latency_table, workload.quality, file_layout(model, layers), workload_digest(workload, model))
    try:
        check_feasible(layers, space.resolved_choices(layers).choices, ctx.limits, ctx.cm)
    except InfeasibleBudget as e:
        hint = uncompressed_hint(model, layers) if "achievable size=" in str(e) else ""
        if hint:
            raise InfeasibleBudget(f"{e}; {hint}", e.minimum) from None
        raise
    return ctx


def uncompressed_hint(model: Any, layers: Sequence[Any], share: float = 0.1) -> str:
    """Where a size floor comes from when ``share`` or more of the parameters are in no layer
    autocomp compresses (they stay fp32): that share and the largest such tensors, by name.
    ``""`` below ``share``. A packed ``torch.nn.MultiheadAttention`` projection
    (``in_proj_weight``) is the usual one: it is a parameter of no Linear.

    Example:
        >>> import torch
        >>> from autocomp.profile import profile_model
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8))
        >>> m.register_parameter("table", torch.nn.Parameter(torch.zeros(64, 8)))
        >>> uncompressed_hint(m, profile_model(m, torch.zeros(1, 8)))
        '88% of the parameters are in no Conv1d/Conv2d/Linear/Embedding layer and stay fp32: table [64, 8]'
    """
    mods = dict(model.named_modules())
    owned = set()
    for layer in layers:
        for n in (layer.name, *getattr(layer, "aliases", ())):
            if n in mods:
                owned.update(p.data_ptr() for p in mods[n].parameters(recurse=False))
    seen, total, rest = set(), 0, []
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
        if p.data_ptr() not in owned:
            rest.append((p.numel(), name, tuple(p.shape)))
    left = sum(n for n, _, _ in rest)
    if not total or left < share * total:
        return ""
    rest.sort(key=lambda r: (-r[0], r[1]))
    shown = ", ".join(f"{name} [{', '.join(map(str, shape))}]" for _, name, shape in rest[:3])
    more = f" and {len(rest) - 3} more" if len(rest) > 3 else ""
    return (f"{left / total:.0%} of the parameters are in no Conv1d/Conv2d/Linear/Embedding layer and stay fp32: "
            f"{shown}{more}")


def workload_digest(workload: Workload, model: Any) -> str:
    """A fingerprint of what a study's evaluations depend on besides the policy: the inputs of the
    workload's calibration and evaluation batches (every byte) and their integer targets (labels,
    token ids), the training batches and the float weights sampled (each tensor's shape, dtype and
    up to 4,096 of its values, evenly spaced, so a 7B model costs no more than a small one).
    Floating-point targets (an encoder's fp32 outputs, computed when the workload loads) count
    by shape only: their last bits may differ between machines. Stored with a new study; resuming
    the study on other data or weights is refused (:func:`check_profile`) instead of mixing their
    results in one front.

    Example:
        >>> import torch
        >>> from autocomp.workload import Workload
        >>> batch = [(torch.ones(1, 2), torch.zeros(1, dtype=torch.long))]
        >>> wl = Workload("w", lambda: torch.nn.Linear(2, 2), calib=batch, eval=batch)
        >>> m = wl.model()
        >>> workload_digest(wl, m) == workload_digest(wl, m), len(workload_digest(wl, m))
        (True, 16)
    """
    import hashlib

    import torch

    h = hashlib.blake2b(digest_size=8)

    def feed(obj: Any, floats: bool = True, sample: bool = False) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            if t.numel() == 0 or t.device.type == "meta" or (t.is_floating_point() and not floats):
                return
            flat = t.reshape(-1)
            if sample:
                flat = flat[::max(1, flat.numel() // 4096)][:4096]
            h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(str(k).encode())
                feed(obj[k], floats, sample)
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for item in obj:
                feed(item, floats, sample)
            h.update(b"]")
        elif isinstance(obj, (int, float, str, bool)) or obj is None:
            h.update(repr(obj).encode())
        else:   # an object of the user's own: its type only
            h.update(type(obj).__qualname__.encode())

    def feed_split(batches: Any, sample: bool = False) -> None:
        for batch in batches or ():
            if isinstance(batch, (tuple, list)) and len(batch) == 2:
                feed(batch[0], sample=sample)
                feed(batch[1], floats=False, sample=sample)
            else:
                feed(batch, sample=sample)
            h.update(b";")

    for split in ("calib", "eval"):
        h.update(split.encode())
        feed_split(getattr(workload, split, None))
    h.update(b"train")
    feed_split(getattr(workload, "train", None), sample=True)
    for name, p in model.state_dict().items():
        h.update(name.encode())
        feed(p, sample=True)
    return h.hexdigest()


def load_profiled(spec: str, space: SearchSpace, stages: Stages | None = None):
    """Load and check the workload ``spec``, profile its model and check ``space``'s overrides
    against its layers (writes nothing): ``(workload, model, layers, cost model)``, the cost model
    counting its checkpoint file. What a proxy audit or bench needs before it opens a study."""
    from autocomp.budget import CostModel
    from autocomp.workload import load_workload, validate_workload

    stages = stages or Stages()
    with stages.stage("load model", 1) as tick:
        wl = load_workload(spec)
        model = validate_workload(wl)
        layers = profile_model(model, wl.sample_input())
        space.check_layers(layers)
        tick()
    return wl, model, layers, CostModel(layers, total_params=model_param_count(model), layout=file_layout(model, layers))


def check_profile(store: Store, study: StudyInfo, ctx: StudyContext) -> None:
    """Refuse a study created for another model, or holding another profile of this one (reads only)."""
    if study.config.get("model") not in (None, ctx.spec):
        raise AutocompError(f"study {study.name!r} was created for model {study.config.get('model')!r}, "
                            f"not {ctx.spec!r}: pick another --study name")
    stored = store.load_layers(study)
    if stored and [l.to_dict() for l in stored] != [l.to_dict() for l in ctx.layers]:
        raise AutocompError(f"study {study.name!r} holds a different profile of {ctx.spec!r} "
                            "(the model changed since): pick another --study name")
    before = study.config.get("workload_digest")
    if before is not None and ctx.digest is not None and before != ctx.digest:
        raise AutocompError(f"study {study.name!r} was evaluated on other weights or data of {ctx.spec!r} "
                            "(its calibration or evaluation data, or its weights, changed since): "
                            "pick another --study name")


def stored_accounting(store: Store, study: StudyInfo, ctx: StudyContext) -> StudyContext:
    """``ctx`` under the size accounting ``study`` was created with (reads only): a study profiled
    before sizes counted the checkpoint file (:mod:`autocomp.layout`) keeps its own, so resuming
    it allocates and stores costs as its first run did."""
    if "file_layout" in study.config or not store.load_layers(study):
        return ctx
    legacy = ctx.with_layout(None)
    check_feasible(legacy.layers, legacy.space.resolved_choices(legacy.layers).choices, legacy.limits, legacy.cm)
    return legacy


def record_profile(store: Store, study: StudyInfo, ctx: StudyContext, **config: Any) -> None:
    """Store the layers (once) and what :func:`~autocomp.stages.context.load_context` reads back."""
    check_profile(store, study, ctx)
    if not store.load_layers(study):
        store.save_layers(study, ctx.layers)
    store.update_config(study, **ctx.stored_config(), **config)
