"""``autocomp front ...``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from autocomp.cli._common import (DB_OPTION, EVALUATION_KINDS, cost_names, guarded, read_store, study_name,
                                  writable_output)
from autocomp.cli.tables import print_front

front_app = typer.Typer(help="Pareto fronts recomputed from the study database.", no_args_is_help=True)


@front_app.command("show")
@guarded
def show_cmd(study: str = typer.Argument(..., help="Study name."), db: Optional[str] = DB_OPTION,
             as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
             kind: str = typer.Option("all", "--kind", help="Evaluations: all (each policy at its best of PTQ, QAT and NAS trials), ptq, qat or nas.")) -> None:
    """The study's front (searched policies) with the uniform baselines marked; a policy whose QAT
    (or NAS) trial beat its PTQ evaluation is shown at that quality, marked ``(qat)``.

    JSON points hold `quality` and `quality_metric` (and the value under the metric's name, e.g.
    `accuracy`), then one key per cost metric, and `kind` (ptq, qat, nas: which evaluation gave the
    quality); a `--target` search adds `target` (its answer and bracket).
    """
    from autocomp.errors import AutocompError
    from autocomp.report import front

    study_name(study)
    if kind not in EVALUATION_KINDS:
        raise AutocompError(f"unknown --kind {kind!r}: use {' or '.join(EVALUATION_KINDS)}")
    store = read_store(db)
    st = store.get_study(study)
    pts = front(store, st, kind=None if kind == "all" else kind)
    if as_json:
        target = {"target": st.config["target_result"]} if st.config.get("target_result") else {}
        typer.echo(json.dumps({"study": study, "status": st.status, "fp32": st.config.get("fp32", {}),
                               "quantizer": st.config.get("quantizer", "rtn"), "points": pts, **target},
                              indent=1, default=str))
    else:
        print_front(study, pts, st.config)


@front_app.command("export")
@guarded
def export_cmd(study: str = typer.Argument(...), policy_id: str = typer.Argument(..., help="Policy id (a unique prefix is enough)."),
               output: Path = typer.Option(..., "-o", "--output", help="Where to write: a file (policy), a directory (checkpoint)."),
               fmt: str = typer.Option("policy", "--format", "-f", help="policy (JSON), checkpoint (safetensors + manifest), ..."),
               force: bool = typer.Option(False, "--force", help="Replace an output directory that is not empty."),
               model: Optional[str] = typer.Option(None, "--model", "-m", help="The model to export from (default: the study's, if built-in or trusted)."),
               trust_stored_model: bool = typer.Option(False, "--trust-stored-model", help="Import the model spec stored in the study (runs its code)."),
               apply: bool = typer.Option(False, "--apply", help="torchao: also quantize the model with torchao and save it (safetensors)."),
               db: Optional[str] = DB_OPTION) -> None:
    """Write one policy: as versioned JSON (``Policy.from_dict`` reads it back), or as a compressed
    checkpoint directory (``autocomp.load_compressed(DIR, factory)`` reads it back)."""
    from autocomp.stages.export import export_policy

    study_name(study)
    typer.echo(export_policy(read_store(db), study, policy_id, fmt, output, force, model, trust_stored_model, apply))


@front_app.command("plot")
@guarded
def plot_cmd(study: str = typer.Argument(..., help="Study name."),
             output: Path = typer.Option(Path("front.png"), "-o", "--output", help="Image to write (.png, .svg, .pdf)."),
             costs: Optional[str] = typer.Option(None, "--costs", help="Comma-separated costs [default: the budgeted ones]."),
             db: Optional[str] = DB_OPTION) -> None:
    """Quality (accuracy, perplexity ...) against each budgeted cost: the front highlighted, uniform baselines marked."""
    from autocomp.plot import plot_front

    study_name(study)
    names = cost_names(costs)
    writable_output(output)
    out = plot_front(read_store(db), study, output, names)
    typer.echo(f"wrote {out}")
