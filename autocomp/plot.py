"""Front plots: quality against each budgeted cost, the front highlighted, uniform baselines marked.

Axes come from the cost-metric registry (:mod:`autocomp.costs`: % of fp32 for size and BitOps,
bits, milliseconds) and the y axis from the study's quality metric (accuracy, perplexity ...).

Drawn with matplotlib's Agg backend (no display needed), from what the study database holds.

Example:
    >>> from autocomp.plot import plot_front
    >>> from autocomp.store import Store
    >>> plot_front(Store("autocomp.db"), "first", "front.png")       # doctest: +SKIP
    PosixPath('front.png')
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from autocomp.costs import get_cost_metric
from autocomp.errors import AutocompError
from autocomp.metrics import QualityMetric
from autocomp.report import front, pareto, quality_metric, study_points
from autocomp.store import Store

_SOURCE_STYLE = {"optuna": ("tab:orange", "o", "Optuna refinement"), "optuna-qat": ("tab:purple", "^", "QAT")}


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ModuleNotFoundError as e:  # optional dependency: say which extra brings it
        raise AutocompError("plots need matplotlib, a dependency of autocomp that is missing: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cost_axis(point: dict, cost: str, fp32: dict) -> float | None:
    """The value plotted for ``cost``, as its metric draws it (e.g. % of fp32, milliseconds)."""
    v = point.get(cost)
    return None if v is None else get_cost_metric(cost).axis(v, fp32.get(cost))


def _band(values: list[float], metric: QualityMetric) -> tuple[float, float]:
    """The y range: very low-bit policies collapse (to chance, to a huge perplexity), so values
    worse than half (or twice) the best are left out of the range when some are within it."""
    if metric.higher_is_better:
        top = max(values)
        near = [v for v in values if v >= 0.5 * top]
        lo, hi = (min(near) if near else min(values)), top
    else:
        best = min(values)
        near = [v for v in values if v <= 2.0 * best]
        lo, hi = best, (max(near) if near else max(values))
    pad = 0.05 * (hi - lo + 1e-3)
    return lo - pad, hi + pad


def front_figure(store: Store, study_name: str, costs: Sequence[str] | None = None) -> Any:
    """A matplotlib figure with one panel per cost (the quality metric on the y axis)."""
    plt = _matplotlib()
    st = store.get_study(study_name)
    costs = list(costs or st.config.get("front_costs") or ["size"])
    fp32 = st.config.get("fp32", {})
    pts = study_points(store, st)
    if not pts:
        raise AutocompError(f"study {study_name!r} has no evaluations to plot")
    metric = quality_metric(pts)
    fr = {p["policy_id"] for p in front(store, st, costs, kind="ptq") if p["on_front"] and not p["baseline"]}
    qat = study_points(store, st, kind="qat")
    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 4.2), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        searched = [p for p in pts if not p["baseline"] and p.get(cost) is not None]
        for src in sorted({p["source"] for p in searched}):
            color, marker, label = _SOURCE_STYLE.get(src, ("tab:blue", "o", f"{src} allocation"))
            sel = [p for p in searched if p["source"] == src]
            ax.scatter([cost_axis(p, cost, fp32) for p in sel], [p["quality"] for p in sel], s=18,
                       c=color, marker=marker, alpha=0.55, label=label, zorder=2)
        on = [p for p in searched if p["policy_id"] in fr]
        ax.scatter([cost_axis(p, cost, fp32) for p in on], [p["quality"] for p in on], s=70,
                   facecolors="none", edgecolors="red", linewidths=1.5, label="front (all budgeted costs)", zorder=3)
        line = pareto(searched, [cost], metric)  # the 2-D front of this panel, as a staircase
        xs = [cost_axis(p, cost, fp32) for p in line]
        ax.step(xs, [p["quality"] for p in line], where="post", color="red", lw=1.2, zorder=3)
        if qat:
            ax.scatter([cost_axis(p, cost, fp32) for p in qat], [p["quality"] for p in qat], s=40, c="tab:purple",
                       marker="^", label="after QAT", zorder=4)
        for p in pts:
            if p["baseline"] and p.get(cost) is not None:
                x = cost_axis(p, cost, fp32)
                if p["source"] == "fp32":
                    ax.axhline(p["quality"], color="grey", ls="--", lw=0.8, zorder=1)
                    ax.annotate("fp32", (ax.get_xlim()[0], p["quality"]), fontsize=7, color="grey",
                                xytext=(2, 2), textcoords="offset points")
                    continue
                ax.scatter([x], [p["quality"]], marker="x", c="black", s=45, zorder=4)
                ax.annotate(p["label"].replace("uniform ", ""), (x, p["quality"]), fontsize=7,
                            xytext=(4, -9), textcoords="offset points")
        ax.scatter([], [], marker="x", c="black", label="uniform baselines")
        ax.set_xlabel(get_cost_metric(cost).label)
        ax.set_ylabel(metric.name)
        ax.grid(alpha=0.3)
        ax.set_ylim(*_band([p["quality"] for p in pts], metric))
    # The front runs to the good corner: keep the legend in the other one.
    axes[0][0].legend(fontsize=7, loc="lower right" if metric.higher_is_better else "upper right")
    fig.suptitle(f"{study_name}: {st.config.get('model', '')}, {st.config.get('budget_text', '')}", fontsize=10)
    fig.tight_layout()
    return fig


def front_png(store: Store, study_name: str, costs: Sequence[str] | None = None, dpi: int = 110) -> bytes:
    """The front plot as PNG bytes (embedded by :mod:`autocomp.html_report`)."""
    plt = _matplotlib()
    fig = front_figure(store, study_name, costs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def plot_front(store: Store, study_name: str, output: str | Path, costs: Sequence[str] | None = None) -> Path:
    """Write the front plot of ``study_name`` to ``output`` (PNG; .svg/.pdf by extension)."""
    plt = _matplotlib()
    out = Path(output)
    fig = front_figure(store, study_name, costs)
    try:
        fig.savefig(out, dpi=120)
    except OSError as e:
        raise AutocompError(f"cannot write {out}: {e.strerror or e}") from e
    except ValueError as e:  # unknown extension
        raise AutocompError(f"cannot write {out}: {str(e).splitlines()[0]}") from e
    finally:
        plt.close(fig)
    return out
