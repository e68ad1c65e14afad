"""``autocomp report``: one self-contained HTML page per study.

The page holds the front plot (a base64 PNG, so the file travels alone), the front table, and a
per-layer map of every front policy: weight bits / activation bits / pruning per layer, coloured
by weight bits, so where the allocator spent its bits is visible at a glance.

Example:
    >>> from autocomp.html_report import write_report
    >>> write_report(Store("autocomp.db"), "first", "report.html")     # doctest: +SKIP
    PosixPath('report.html')
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from autocomp.costs import reported_metrics
from autocomp.errors import AutocompError
from autocomp.policy import Policy
from autocomp.report import change_vs_fp32, front, quality_metric
from autocomp.store import Store

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td.l{text-align:left} .base{color:#777}
table.map td{text-align:center;font-family:monospace;font-size:12px;min-width:3.5em}
.meta td{text-align:left}
"""


def _bits_colour(w_bits: float) -> str:
    """Low bits red, 8 bits green, float grey: a diverging scale readable in print."""
    if w_bits >= 32:
        return "#e0e0e0"
    t = max(0.0, min(1.0, (float(w_bits) - 1.0) / 7.0))
    r, g = int(230 - 120 * t), int(120 + 100 * t)
    return f"rgb({r},{g},120)"


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def front_rows(points: Sequence[dict], fp32: dict) -> list[dict[str, str]]:
    """The front table's rows as display strings (shared with ``studies compare``): the quality
    under its metric's name, then each reported cost metric (as % of fp32 where the metric is
    shown so, else in its units)."""
    name = quality_metric(points).name
    out = []
    for p in points:
        row = {"policy": p["policy_id"],
               "kind": (("baseline" + ("*" if p.get("on_front") else "")) if p.get("baseline") else "front")
               + (f" ({p['kind']})" if p.get("kind", "ptq") != "ptq" else ""),   # a QAT/NAS trial's quality
               "source": p["source"], name: f"{p['quality']:.4f}", "vs fp32": change_vs_fp32(p, points)}
        for m in reported_metrics():
            v = p.get(m.name)
            if m.percent:
                row[f"{m.column} %"] = _fmt(100 * v / fp32[m.name] if fp32.get(m.name) and v is not None else None, ".1f")
            else:
                row[m.column] = "-" if v is None else m.format(v)
        row["label"] = p.get("label", "")
        out.append(row)
    return out


def render_report(store: Store, study_name: str) -> str:
    """The report of ``study_name`` as one HTML string (no external resources)."""
    from autocomp.plot import front_png

    st = store.get_study(study_name)
    pts = front(store, st)
    if not pts:
        raise AutocompError(f"study {study_name!r} has no evaluations to report")
    cfg, fp32 = st.config, st.config.get("fp32", {})
    png = base64.b64encode(front_png(store, study_name)).decode()
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>autocomp: {e(study_name)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Study {e(study_name)}</h1><table class='meta'>"]
    counts = next((r for r in store.list_studies() if r["name"] == study_name), {})
    for k, v in (("model", cfg.get("model")), ("budget", cfg.get("budget_text")), ("space", cfg.get("space")),
                 ("proxy", cfg.get("proxy")), ("allocator", cfg.get("allocator")),
                 ("quantizer", cfg.get("quantizer", "rtn")), ("status", st.status),
                 ("policies", counts.get("policies")), ("evaluations", counts.get("evaluations")),
                 ("refinement", f"{cfg.get('refine', 0)} ({cfg.get('refine_mode', 'ptq')})")):
        parts.append(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>")
    parts.append("</table><h2>Front</h2>")
    parts.append(f"<img alt='front plot' src='data:image/png;base64,{png}'>")
    rows = front_rows(pts, fp32)
    parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>")
    for r in rows:
        cls = " class='base'" if r["kind"].startswith("baseline") else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td class='l'>{e(v)}</td>" if k in ("policy", "kind", "source", "label")
                                            else f"<td>{e(v)}</td>" for k, v in r.items()) + "</tr>")
    parts.append("</table><p>baseline* = a uniform baseline no searched policy dominates</p>")
    parts.append(_layer_map(store, st, [p for p in pts if not p["baseline"]]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _layer_map(store: Store, st: Any, points: Sequence[dict]) -> str:
    """Policies as rows, layers as columns: ``w4a8`` (+ ``p0.5`` when pruned), coloured by bits."""
    if not points:
        return ""
    e = html.escape
    layers = [l.name for l in store.load_layers(st)]
    out = ["<h2>Per-layer bits and pruning of the front policies</h2><table class='map'><tr><th>policy</th>"
           f"<th>{e(quality_metric(points).name)}</th>" + "".join(f"<th>{e(n)}</th>" for n in layers) + "</tr>"]
    for p in points:
        pol = Policy.from_dict(store.get_policy(st, p["policy_id"]).policy).as_dict()
        cells = []
        for n in layers:
            c = pol.get(n)
            if c is None:
                cells.append("<td>fp32</td>")
                continue
            txt = ("fp" if c.w_bits >= 32 else f"w{c.w_bits:g}") + ("" if c.a_bits >= 32 else f"a{c.a_bits:g}")
            if c.prune:
                txt += f"<br>p{c.prune:g}"
            cells.append(f"<td style='background:{_bits_colour(c.w_bits)}'>{txt}</td>")
        out.append(f"<tr><td>{e(p['policy_id'])}</td><td>{p['quality']:.4f}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(store: Store, study_name: str, output: str | Path) -> Path:
    """Write :func:`render_report` to ``output``."""
    out = Path(output)
    text = render_report(store, study_name)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise AutocompError(f"cannot write {out}: {err.strerror or err}") from err
    return out
