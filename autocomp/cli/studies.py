"""``autocomp studies ...``."""
from __future__ import annotations

import json
from typing import Optional

import typer

from autocomp.cli._common import DB_OPTION, guarded
from autocomp.cli.tables import print_studies

studies_app = typer.Typer(help="Studies stored in the database.", no_args_is_help=True)


@studies_app.command("list")
@guarded
def list_cmd(db: Optional[str] = DB_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """Studies with their counts and status."""
    from autocomp.store import Store

    rows = Store(db).list_studies()
    if as_json:
        typer.echo(json.dumps(rows, indent=1, default=str))
    elif not rows:
        typer.echo("no studies")
    else:
        print_studies(rows)
