"""The ``autocomp`` command: one Typer sub-app per noun; thin wrappers over library functions."""
from __future__ import annotations

import sys

import typer

from autocomp.cli._common import run_guarded
from autocomp.cli.front import front_app
from autocomp.cli.proxies import proxies_app
from autocomp.cli.report import report_cmd
from autocomp.cli.search import search_cmd
from autocomp.cli.studies import studies_app
from autocomp.cli.validate import profile_latency_cmd, validate_cmd

app = typer.Typer(name="autocomp", help="Search compression policies (mixed precision, pruning) for PyTorch models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("search")(search_cmd)
app.add_typer(studies_app, name="studies")
app.add_typer(front_app, name="front")
app.add_typer(proxies_app, name="proxies")
app.command("report")(report_cmd)
app.command("validate")(validate_cmd)
app.command("profile-latency")(profile_latency_cmd)


def main(argv: list[str] | None = None) -> None:
    """The ``autocomp`` entry point: runs ``argv`` (default: the command line), then exits."""
    run_guarded(app, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
