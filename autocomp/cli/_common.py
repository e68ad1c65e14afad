"""Shared CLI plumbing: options with env vars, input checks, and one-line errors with exit code 2.

Every user-caused error, Click's usage errors included, ends as one ``error: ...`` line on
stderr and exit code 2, and every check here runs before any work or database write.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import typer

try:  # recent Typer runs on its own copy of Click: its exceptions are the ones raised
    from typer._click import exceptions as click_exc
except ImportError:  # older Typer (the >=0.12 range) runs on Click itself
    from click import exceptions as click_exc

from autocomp.errors import AutocompError

DB_OPTION = typer.Option(None, "--db", envvar="AUTOCOMP_DB",
                         help="Study database: a SQLAlchemy URL or a SQLite file path [default: ./autocomp.db].")
EVALUATION_KINDS = ("all", "ptq", "qat", "nas")  # what `front show --kind` can read (all: each policy's best)


def fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _first_line(e: BaseException) -> str:
    # An error raised in a Ray worker arrives as Ray's RayTaskError (of the same class), whose
    # text starts with "ray::task() (pid=..., ip=...)" and a traceback: say the worker's own error.
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and type(e).__name__.startswith("RayTaskError"):
        e = cause
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-caused errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutocompError as e:
            fail(_first_line(e), e.exit_code)

    return wrapper


def run_guarded(app: typer.Typer, argv: Sequence[str] | None = None) -> None:
    """Run ``app`` on ``argv`` (default: ``sys.argv[1:]``) and exit with its code.

    Click's usage errors (unknown option, bad value, missing argument) become one ``error:``
    line and exit 2 instead of Click's usage box; ``--help`` and exit codes 0, 1 and 130 are kept.
    """
    try:
        rc = app(args=list(sys.argv[1:] if argv is None else argv), prog_name="autocomp", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as e:  # `autocomp front`: the group's help is the answer
        e.show()
        sys.exit(e.exit_code)
    except click_exc.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        typer.echo(f"error: {_first_line(Exception(e.format_message()))}{hint}", err=True)
        sys.exit(2)
    except click_exc.ClickException as e:  # e.g. a file Click could not open
        typer.echo(f"error: {_first_line(Exception(e.format_message()))}", err=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C outside a command that handles it (Click says the same)
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except AutocompError as e:  # raised outside a command body (e.g. in a callback)
        typer.echo(f"error: {_first_line(e)}", err=True)
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)


def at_least(value: int | None, option: str, minimum: int = 1) -> None:
    """Refuse ``option``'s ``value`` below ``minimum`` (``None``: the default, accepted)."""
    if value is not None and value < minimum:
        raise AutocompError(f"{option} must be at least {minimum}, got {value}")


def writable_output(path: Path, option: str = "--output") -> Path:
    """Check, before any work, that ``path`` can be written: its directory exists, it is no directory."""
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        raise AutocompError(f"cannot write {option} {path}: directory {str(parent)!r} does not exist")
    if path.expanduser().is_dir():
        raise AutocompError(f"cannot write {option} {path}: it is a directory")
    return path


def cost_names(costs: str | None) -> list[str] | None:
    """``--costs a,b`` as registered cost-metric names (``None``: the study's default)."""
    if costs is None:
        return None
    from autocomp.costs import get_cost_metric

    names = [c.strip() for c in costs.split(",") if c.strip()]
    if not names:
        raise AutocompError("--costs needs at least one cost metric name")
    for n in names:
        get_cost_metric(n)
    return names


def read_store(db: str | None):
    """The study database for a command that only reads: a missing SQLite file is an error."""
    from autocomp.store import Store

    return Store(db, must_exist=True)


def hf_options(model: str, data: str, task: str | None, seq_len: int | None) -> tuple[str, str]:
    """Fold ``--data FILE``, ``--task`` and ``--seq-len`` into an ``hf:`` model spec.

    Returns the spec to load and the proxies' ``--data`` (``real`` when a file was given).

    Example:
        >>> hf_options("hf:/m", "/d.txt", None, 64)
        ('hf:/m?data=/d.txt&seq=64', 'real')
    """
    if not model.startswith("hf:"):
        if task is not None or seq_len is not None:
            raise AutocompError(f"--{'task' if task is not None else 'seq-len'} applies only to an hf: model "
                                "(--model hf:PATH)")
        return model, data
    from autocomp.workloads.hf import merge_spec

    file = None if data in ("real", "distilled") else data
    return merge_spec(model, file, task, seq_len), "real" if file is not None else data


def default_study_name(*parts: str) -> str:
    """A valid study name made of ``parts`` (``--model`` specs hold ``/``, ``:`` ...), joined by ``-``.

    Example:
        >>> default_study_name("audit-./my models.py:make")
        'audit-._my_models.py_make'
    """
    import re

    return "-".join(re.sub(r"[^A-Za-z0-9._-]", "_", p)[-120:] for p in parts)


def study_name(name: str) -> str:
    """A valid study name (see :func:`autocomp.store.repository.check_study_name`)."""
    from autocomp.store.repository import check_study_name

    return check_study_name(name)
