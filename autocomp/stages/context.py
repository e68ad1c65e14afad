"""What every stage needs about a study, rebuilt from what the store holds.

:func:`prepare` builds it from a workload (nothing written); :func:`load_context` rebuilds it
from a stored study, so each stage can run alone on a study another process created.

Example:
    >>> from autocomp.stages import load_context            # doctest: +SKIP
    >>> ctx = load_context(store, store.get_study("first"))  # doctest: +SKIP
    >>> ctx.limits.describe()                               # doctest: +SKIP
    'size<=25%'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from autocomp.budget import Budget, CostModel, Limits
from autocomp.errors import AutocompError
from autocomp.layout import FileLayout
from autocomp.profile import LayerInfo
from autocomp.search_spaces import SearchSpace, space_from_dict
from autocomp.store import Store
from autocomp.store.repository import StudyInfo


@dataclass(frozen=True)
class StudyContext:
    """A study's fixed inputs: the workload spec, its layers, space, budget and cost model.

    Attributes:
        spec: the ``--model`` string workers load.
        quality: the workload's quality metric name (direction of the first objective).
        limits: the budget resolved once against ``cm`` (absolute numbers).
    """

    spec: str
    layers: tuple[LayerInfo, ...]
    space: SearchSpace
    budget: Budget
    cm: CostModel
    limits: Limits
    quality: str = "accuracy"
    digest: str | None = None   # :func:`autocomp.stages.profile.workload_digest` (None: not known)

    @property
    def names(self) -> list[str]:
        return [l.name for l in self.layers]

    def stored_config(self) -> dict[str, Any]:
        """What :func:`load_context` needs besides the layers (kept in the study's config)."""
        return {"model": self.spec, "quality": self.quality, "budget": self.budget.to_dict(),
                "budget_text": self.budget.describe(), "space_def": self.space.to_dict(),
                "total_params": self.cm.total_params, "fp32": {m: self.cm.fp32(m) for m in self.cm.metrics},
                "front_costs": list(self.budget.metrics),
                **({} if self.cm.layout is None else {"file_layout": self.cm.layout.to_dict()}),
                **({} if self.digest is None else {"workload_digest": self.digest})}

    def with_layout(self, layout: FileLayout | None) -> "StudyContext":
        """The same study inputs under another size accounting (None: that of earlier studies)."""
        return make_context(self.spec, self.layers, self.space, self.budget, self.cm.total_params,
                            self.cm.latency_table, self.quality, layout, self.digest)


def make_context(spec: str, layers: Sequence[LayerInfo], space: SearchSpace, budget: Budget,
                 total_params: int | None, latency_table: Any = None, quality: str = "accuracy",
                 layout: FileLayout | None = None, digest: str | None = None) -> StudyContext:
    cm = CostModel(layers, total_params=total_params, latency_table=latency_table, layout=layout)
    return StudyContext(spec, tuple(layers), space, budget, cm, budget.resolve(cm), quality, digest)


def load_context(store: Store, study: StudyInfo) -> StudyContext:
    """Rebuild a study's :class:`StudyContext` from the store (a stage run alone starts here)."""
    cfg = study.config
    layers = store.load_layers(study)
    if not layers or "budget" not in cfg or "space_def" not in cfg:
        raise AutocompError(f"study {study.name!r} has no stored profile yet: run `autocomp search --study "
                            f"{study.name}` first")
    table = None
    if cfg.get("latency_table"):
        from autocomp.kernels.latency import load_latency_table

        table = load_latency_table(cfg["latency_table"])
    return make_context(cfg["model"], layers, space_from_dict(cfg["space_def"]), Budget.from_dict(cfg["budget"]),
                        cfg.get("total_params"), table, cfg.get("quality", "accuracy"),
                        FileLayout.from_dict(cfg["file_layout"]) if cfg.get("file_layout") else None,
                        cfg.get("workload_digest"))
