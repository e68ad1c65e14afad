"""``autocomp studies ...``."""
from __future__ import annotations

import json
from typing import Optional

import typer

from autocomp.cli._common import DB_OPTION, cost_names, guarded, read_store, study_name
from autocomp.cli.tables import print_studies

studies_app = typer.Typer(help="Studies stored in the database.", no_args_is_help=True)


@studies_app.command("list")
@guarded
def list_cmd(db: Optional[str] = DB_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """Studies with their counts and status."""
    rows = read_store(db).list_studies()
    if as_json:
        typer.echo(json.dumps(rows, indent=1, default=str))
    elif not rows:
        typer.echo("no studies")
    else:
        print_studies(rows)


@studies_app.command("compare")
@guarded
def compare_cmd(a: str = typer.Argument(..., help="First study."), b: str = typer.Argument(..., help="Second study."),
                db: Optional[str] = DB_OPTION,
                db_b: Optional[str] = typer.Option(None, "--db-b", help="Database of the second study [default: --db]."),
                costs: Optional[str] = typer.Option(None, "--costs", help="Comma-separated costs [default: A's budgeted ones]."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Two fronts side by side, with the hypervolume of each (larger is better)."""
    from autocomp.compare import compare_studies

    study_name(a), study_name(b)
    names = cost_names(costs)
    store = read_store(db)
    res = compare_studies(store, a, b, read_store(db_b) if db_b else None, names)
    if as_json:
        typer.echo(json.dumps(res, indent=1, default=str))
    else:
        from autocomp.cli.tables import print_comparison

        print_comparison(res)
