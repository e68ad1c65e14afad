"""``autocomp report``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autocomp.cli._common import DB_OPTION, guarded, read_store, study_name, writable_output


@guarded
def report_cmd(study: str = typer.Argument(..., help="Study name."),
               output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write."),
               db: Optional[str] = DB_OPTION) -> None:
    """One self-contained HTML page: front plot, front table, per-layer maps of the front policies."""
    from autocomp.html_report import write_report

    study_name(study)
    writable_output(output)
    out = write_report(read_store(db), study, output)
    typer.echo(f"wrote {out}")
