"""Shared CLI plumbing: options with env vars, and one-line errors with exit code 2."""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import typer

from autocomp.errors import AutocompError

DB_OPTION = typer.Option(None, "--db", envvar="AUTOCOMP_DB",
                         help="Study database: a SQLAlchemy URL or a SQLite file path [default: ./autocomp.db].")


def fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-caused errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutocompError as e:
            fail(str(e).splitlines()[0] if str(e) else type(e).__name__, e.exit_code)

    return wrapper


def run_guarded(app: typer.Typer) -> None:
    try:
        app()
    except AutocompError as e:  # raised outside a command body (e.g. in a callback)
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
