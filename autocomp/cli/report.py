"""``autocomp report``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autocomp.cli._common import DB_OPTION, guarded


@guarded
def report_cmd(study: str = typer.Argument(..., help="Study name."),
               output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write."),
               db: Optional[str] = DB_OPTION) -> None:
    """One self-contained HTML page: front plot, front table, per-layer maps of the front policies."""
    from autocomp.html_report import write_report
    from autocomp.store import Store

    out = write_report(Store(db), study, output)
    typer.echo(f"wrote {out}")
