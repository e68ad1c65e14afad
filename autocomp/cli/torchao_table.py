"""The tables ``autocomp validate --backend torchao`` prints: each policy on the float model,
autocomp's kernels and torchao's against the simulation (one run, one device), and the layers
torchao cannot express (kept float in torchao's model)."""
from __future__ import annotations

from typing import Sequence

from rich.markup import escape
from rich.table import Table


def backend_tables(comparisons: Sequence) -> list[Table]:
    """The comparison table, plus the unsupported-layers table when any layer is not torchao's
    (:class:`autocomp.kernels.torchao_backend.BackendComparison` each).

    Example:
        >>> from autocomp.kernels.torchao_backend import BackendComparison, BackendRun
        >>> c = BackendComparison("abc", "cpu", [BackendRun("fp32", 2e-3, 0.1, 0.01, 1.0),
        ...                                      BackendRun("torchao", 1e-3, 0.2, 0.02, 0.9)])
        >>> [t.row_count for t in backend_tables([c])]
        [2]
    """
    t = Table(title="autocomp and torchao kernels against the simulation (same device, same run)")
    for col in ("policy", "device", "backend", "max abs err", "max rel err", "top-1 agree", "latency",
                "vs fp32", "float on torchao"):
        t.add_column(col, justify="left" if col in ("policy", "device", "backend") else "right")
    for c in comparisons:
        fp = c.run("fp32")
        for r in c.runs:
            t.add_row(c.policy_id, c.device, r.backend, f"{r.max_abs_err:.3g}", f"{r.max_rel_err:.2e}",
                      f"{r.top1_agreement:.3f}", f"{r.latency * 1e3:.3g} ms",
                      f"{fp.latency / r.latency:.2f}x" if fp and r.latency > 0 else "-",
                      f"{len(c.unsupported)} layers" if r.backend == "torchao" else "")
        if c.note:
            t.add_row(c.policy_id, c.device, "torchao", "-", "-", "-", "-", "-", escape(c.note))
    out = [t]
    rows = [(c.policy_id, u) for c in comparisons for u in c.unsupported]
    if rows:
        u = Table(title="layers torchao cannot express (kept float in torchao's model)")
        for col in ("policy", "layer", "choice", "why"):
            u.add_column(col)
        for pid, x in rows:
            u.add_row(pid, escape(x.name), x.choice, escape(x.reason))
        out.append(u)
    return out
