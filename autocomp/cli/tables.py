"""Rich tables for fronts and studies."""
from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autocomp.costs import reported_metrics


def _cost_cells(p: dict[str, Any], fp: dict) -> list[str]:
    """One cell per reported cost metric in its units, plus its % of fp32 where it is shown so."""
    cells = []
    for m in reported_metrics():
        v = p.get(m.name)
        cells.append("-" if v is None else m.format(v))
        if m.percent:
            cells.append(f"{100 * v / fp[m.name]:.1f}" if fp.get(m.name) and v is not None else "-")
    return cells


def print_front(study: str, points: Sequence[dict[str, Any]], config: dict, console: Console | None = None) -> None:
    from autocomp.report import change_vs_fp32, quality_metric  # the store loads only when a front is shown

    console = console or Console(width=140)
    fp = config.get("fp32", {})
    # Names and labels come from users and the database: shown literally, never as rich markup.
    t = Table(title=escape(f"Pareto front of study {study!r} ({config.get('model')}, {config.get('budget_text', '')})"))
    costs = [c for m in reported_metrics() for c in ((m.column, f"{m.column} %") if m.percent else (m.column,))]
    measured = any(p.get("speedup") for p in points)  # kernels measured by `autocomp validate`
    cols = ("policy", "kind", quality_metric(points).name, "vs fp32", *costs, *(("kernel",) if measured else ()), "label")
    for col in cols:
        t.add_column(col, justify="left" if col in ("policy", "kind", "label") else "right")
    for p in points:
        kind = ("baseline" + ("*" if p.get("on_front") else "")) if p.get("baseline") else "front"
        kind += f" ({p['kind']})" if p.get("kind", "ptq") != "ptq" else ""   # a QAT/NAS trial's quality
        kind += " +salient" if p.get("own_costs") else ""   # stored at its own costs (autocomp.salient)
        kernel = (f"{p['speedup']:.2f}x {p.get('device', '')}".rstrip() if p.get("speedup") else "-",) if measured else ()
        t.add_row(p["policy_id"], kind, f"{p['quality']:.4f}", change_vs_fp32(p, points), *_cost_cells(p, fp), *kernel, escape(str(p.get("label", ""))))
    console.print(t)
    console.print("baseline* = a uniform baseline no searched policy dominates")
    trained = sorted({p["kind"] for p in points if p.get("kind", "ptq") != "ptq"})
    if trained:
        console.print(f"({'/'.join(trained)}) = the policy's quality after its {'/'.join(trained).upper()} trial "
                      "(better than its PTQ one); `front show --kind ptq`: the PTQ front alone")
    if any(p.get("own_costs") for p in points):
        console.print("+salient = a QAT trial keeping PB-LLM salient 8-bit weights, at its own costs (them counted)")
    console.print(escape(f"quantizer: {config.get('quantizer', 'rtn')}"))
    if config.get("target_result"):
        console.print(escape(target_line(config["target_result"])))


def target_line(tr: dict[str, Any]) -> str:
    """One line for a ``--target`` search: the answer and the bracket it proved."""
    from autocomp.costs import get_cost_metric
    from autocomp.metrics import get_quality_metric

    m, q = get_cost_metric(tr["minimise"]), tr["quality_metric"]
    op = ">=" if get_quality_metric(q).higher_is_better else "<="
    head = f"target {tr['target']} ({q}{op}{tr['threshold']:.4f})"
    if not tr.get("reachable", True):
        return f"{head}: unreachable, the mildest policy reaches {q} {tr['probes'][0]['quality']:.4f}"
    a, fail = tr["answer"], tr["bracket"]["fail"]
    bracket = (f"fails at {m.format(fail['cost'])} ({fail['policy_id']}, {q} {fail['quality']:.4f})" if fail
               else "no cheaper probe failed")
    return (f"{head}: {a['policy_id']} at {tr['minimise']} {m.format(a['cost'])}, {q} {a['quality']:.4f}; "
            f"bracket: {bracket}; {len(tr['probes'])} probes, stopped on {tr['stopped']}")


def print_studies(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console(width=140)
    t = Table(title="studies")
    for col in ("name", "status", "model", "budget", "layers", "policies", "evaluations", "updated"):
        t.add_column(col)
    for r in rows:
        t.add_row(escape(r["name"]), r["status"], escape(str(r["model"])), escape(str(r["budget"])), str(r["layers"]),
                  str(r["policies"]), str(r["evaluations"]), str(r["updated_at"])[:19])
    console.print(t)


def print_comparison(res: dict[str, Any], console: Console | None = None) -> None:
    """Two fronts side by side (``autocomp studies compare``)."""
    from rich.columns import Columns

    from autocomp.html_report import front_rows

    console = console or Console(width=180)
    tables = []
    for s in res["studies"]:
        t = Table(title=escape(f"{s['name']} ({s['model']}, {s['proxy']}, {s['space']}, {s['budget']})"))
        rows = front_rows(s["points"], s["fp32"])
        cols = [c for c in (rows[0] if rows else ()) if c not in ("source", "label")]
        for col in cols:
            t.add_column(col, justify="left" if col in ("policy", "kind") else "right")
        for r in rows:
            t.add_row(*(escape(str(r[c])) for c in cols))
        tables.append(t)
    console.print(Columns(tables))
    q = res["quality_metric"]
    for s in res["studies"]:
        best = s["best_quality"]
        console.print(escape(f"{s['name']}: {s['front_size']} front points, hypervolume {s['hypervolume']:.4f} "
                      f"({q} x {' x '.join(res['costs'])} as fraction of fp32), best {q} "
                      f"{best if best is None else format(best, '.4f')}"))
