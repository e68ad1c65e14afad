"""Rich tables for fronts and studies."""
from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.table import Table


def _fmt_size(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.3f} MB" if v >= 1e6 else f"{v / 1e3:.1f} KB"


def print_front(study: str, points: Sequence[dict[str, Any]], config: dict, console: Console | None = None) -> None:
    console = console or Console(width=140)
    fp = config.get("fp32", {})
    t = Table(title=f"Pareto front of study {study!r} ({config.get('model')}, {config.get('budget_text', '')})")
    for col in ("policy", "kind", "accuracy", "size", "size %", "BitOps (G)", "BitOps %", "avg bits", "latency", "label"):
        t.add_column(col, justify="left" if col in ("policy", "kind", "label") else "right")
    for p in points:
        kind = ("baseline" + ("*" if p.get("on_front") else "")) if p.get("baseline") else "front"
        lat = f"{p['latency'] * 1e3:.3g} ms" if p.get("latency") else "-"
        if p.get("latency") and p.get("speedup"):  # measured by `autocomp validate`
            lat += f" ({p['speedup']:.2f}x {p.get('device', '')})".replace(" )", ")")
        t.add_row(p["policy_id"], kind, f"{p['accuracy']:.4f}", _fmt_size(p.get("size")),
                  f"{100 * p['size'] / fp['size']:.1f}" if fp.get("size") and p.get("size") is not None else "-",
                  f"{p['bitops'] / 1e9:.4f}" if p.get("bitops") is not None else "-",
                  f"{100 * p['bitops'] / fp['bitops']:.1f}" if fp.get("bitops") and p.get("bitops") is not None else "-",
                  f"{p['avg_bits']:.2f}" if p.get("avg_bits") is not None else "-", lat, p.get("label", ""))
    console.print(t)
    console.print("baseline* = a uniform baseline no searched policy dominates")


def print_studies(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console(width=140)
    t = Table(title="studies")
    for col in ("name", "status", "model", "budget", "layers", "policies", "evaluations", "updated"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["status"], str(r["model"]), str(r["budget"]), str(r["layers"]),
                  str(r["policies"]), str(r["evaluations"]), str(r["updated_at"])[:19])
    console.print(t)


def print_comparison(res: dict[str, Any], console: Console | None = None) -> None:
    """Two fronts side by side (``autocomp studies compare``)."""
    from rich.columns import Columns

    from autocomp.html_report import front_rows

    console = console or Console(width=180)
    tables = []
    for s in res["studies"]:
        t = Table(title=f"{s['name']} ({s['model']}, {s['proxy']}, {s['space']}, {s['budget']})")
        for col in ("policy", "kind", "accuracy", "size %", "BitOps %", "avg bits"):
            t.add_column(col, justify="left" if col in ("policy", "kind") else "right")
        for r in front_rows(s["points"], s["fp32"]):
            t.add_row(*(r[c] for c in ("policy", "kind", "accuracy", "size %", "BitOps %", "avg bits")))
        tables.append(t)
    console.print(Columns(tables))
    for s in res["studies"]:
        console.print(f"{s['name']}: {s['front_size']} front points, hypervolume {s['hypervolume']:.4f} "
                      f"(accuracy x {' x '.join(res['costs'])} as fraction of fp32), best accuracy "
                      f"{s['best_accuracy'] if s['best_accuracy'] is None else format(s['best_accuracy'], '.4f')}")
