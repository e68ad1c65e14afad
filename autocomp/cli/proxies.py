"""``autocomp proxies list`` and ``autocomp proxies audit``."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from autocomp.cli._common import DB_OPTION, at_least, default_study_name, guarded, study_name

proxies_app = typer.Typer(help="Sensitivity proxies: list them, audit how well they predict accuracy.",
                          no_args_is_help=True)


@proxies_app.command("list")
@guarded
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered proxy names (usable as `autocomp search --proxy NAME`, plus `auto`)."""
    from autocomp.proxies import list_proxies

    names = list_proxies()
    typer.echo(json.dumps(names) if as_json else "\n".join(names + ["auto  (audit, then use the best)"]))


@proxies_app.command("audit")
@guarded
def audit_cmd(
    model: str = typer.Option("digits", "--model", "-m", help="Built-in name, package.module:factory or file.py:factory."),
    samples: int = typer.Option(24, "--samples", "-k", help="Policies sampled across the budget range."),
    study: Optional[str] = typer.Option(None, "--study", "-s", help="Study that stores the audit [default: audit-<model>]."),
    db: Optional[str] = DB_OPTION,
    proxy: Optional[List[str]] = typer.Option(None, "--proxy", help="Proxies to audit (repeatable) [default: all]."),
    space: str = typer.Option("mixed_precision", "--space", help="Search space: built-in name or YAML file."),
    quantizer: Optional[List[str]] = typer.Option(
        None, "--quantizer", "-q",
        help="Quantizers the policies are evaluated with (repeatable or a comma list; rtn, gptq, "
             "awq+bias_correction, ...): a row per proxy and quantizer [default: rtn]."),
    data: str = typer.Option("real", "--data", help="Calibration data for the proxies: real or distilled (ZeroQ)."),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray workers (default: one per CPU)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Rank correlation (Spearman, Kendall) of each proxy's prediction with measured accuracy drops."""
    from autocomp.audit import AuditConfig, run_audit
    from autocomp.progress import RichStages
    from autocomp.store import Store

    at_least(samples, "--samples", 2)
    at_least(workers, "--workers")
    name = study_name(study) if study else default_study_name(f"audit-{model}")
    quantizers = split_specs(quantizer) or ("rtn",)
    cfg = AuditConfig(model=model, samples=samples, proxies=tuple(proxy or ()), space=space, seed=seed,
                      workers=workers, address=address, data=data, quantizers=quantizers)
    store = Store(db)
    stages = RichStages()
    try:
        rows = run_audit(cfg, store, name, stages)
    finally:
        stages.close()
    if as_json:
        typer.echo(json.dumps({"study": name, "audit": rows}, indent=1))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"proxy audit of {model!r}: {samples} policies, data={data} (study {name!r})"))
    for col in ("proxy", "quantizer", "spearman", "kendall", "seconds"):
        t.add_column(col, justify="left" if col in ("proxy", "quantizer") else "right")
    fmt = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
    for r in rows:
        t.add_row(escape(r["proxy"]), escape(r["quantizer"]), fmt(r["spearman"]), fmt(r["kendall"]),
                  f"{r['seconds']:.1f}")
    Console(width=120).print(t)


def split_specs(values: Optional[List[str]]) -> tuple[str, ...]:
    """``--quantizer`` values, each possibly a comma list, as specs (commas inside options kept).

    Example:
        >>> split_specs(["rtn,gptq(act_order=True, damp=0.02)", "awq+bias_correction"])
        ('rtn', 'gptq(act_order=True, damp=0.02)', 'awq+bias_correction')
    """
    out: list[str] = []
    for v in values or ():
        depth, start = 0, 0
        for i, ch in enumerate(v):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                out.append(v[start:i].strip())
                start = i + 1
        out.append(v[start:].strip())
    return tuple(out)
