"""``autocomp search``."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sys
from typing import Optional

import typer

from autocomp.cli._common import DB_OPTION, fail, guarded
from autocomp.cli.tables import print_front


@guarded
def search_cmd(
    model: str = typer.Option("digits", "--model", "-m", help="Built-in name, package.module:factory or file.py:factory."),
    budget: str = typer.Option("size<=25%", "--budget", "-b", help="e.g. 'size<=25%', 'size<=1.5MB,bitops<=30%', 'avg_bits<=4'."),
    study: Optional[str] = typer.Option(None, "--study", "-s", help="Study name; an existing name resumes that study."),
    db: Optional[str] = DB_OPTION,
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address (auto, ray://host:port); default: local Ray."),
    space: str = typer.Option("mixed_precision", "--space", help="Search space: built-in name or YAML file."),
    proxy: str = typer.Option("loss_delta", "--proxy", help="Sensitivity proxy (see `autocomp proxies list`), or auto: a small audit picks the best."),
    data: str = typer.Option("real", "--data", help="Proxies' calibration data: real, or distilled (ZeroQ, from BatchNorm statistics)."),
    allocator: str = typer.Option("ilp", "--allocator", help="Allocator: ilp (any constraints; HiGHS when installed, else CBC) or dp (exact DP, one constraint)."),
    points: int = typer.Option(12, "--points", help="Budget points in the sweep."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Evaluator actors (default: one per CPU)."),
    seed: int = typer.Option(0, "--seed"),
    refine: int = typer.Option(0, "--refine", help="Optuna refinement evaluations after the sweep (resumable; 0: none)."),
    refine_mode: str = typer.Option("ptq", "--refine-mode", help="ptq: PTQ on Ray actors; qat: QAT as Ray Tune trials."),
    refine_sampler: str = typer.Option("auto", "--refine-sampler", help="auto (NSGA-II for ptq, TPE for qat), nsga2, tpe, random."),
    latency_table: Optional[str] = typer.Option(None, "--latency-table", help="Per-layer latency table from `autocomp profile-latency` (for latency budgets)."),
    as_json: bool = typer.Option(False, "--json", help="Print the front as JSON."),
) -> None:
    """Search per-layer compression policies under a budget; prints the Pareto front."""
    from autocomp.progress import RichStages
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store

    cfg = SearchConfig(model=model, budget=budget, space=space, proxy=proxy, data=data, allocator=allocator,
                       points=points, seed=seed, workers=workers, address=address, refine=refine,
                       refine_mode=refine_mode, refine_sampler=refine_sampler,
                       latency_table=latency_table)
    store = Store(db)
    name = study or f"{model.replace('/', '_').replace(':', '_')}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    stages = RichStages()
    try:
        # Ray (cluster events such as "Raylet is terminated") and native solvers (banners) print
        # on stdout: keep stdout for the result (--json must parse), the rest goes to stderr.
        with _stdout_to_stderr():
            result = run_search(cfg, store, name, stages)
    except KeyboardInterrupt:
        stages.close(failed=True)
        _mark(store, name, "interrupted")
        again = f" --refine {refine}" + (f" --refine-mode {refine_mode}" if refine_mode != "ptq" else "") if refine else ""
        fail(f"interrupted; stored results are kept: resume with `autocomp search --study {name}{again}`", 130)
    except BaseException:
        stages.close(failed=True)
        _mark(store, name, "failed")
        raise
    stages.close()
    if as_json:
        typer.echo(json.dumps({"study": name, "front": result.front}, indent=1, default=str))
    else:
        print_front(name, result.front, store.get_study(name).config)
        refined = f", {result.refined} refined by Optuna" if refine else ""
        typer.echo(f"study {name!r}: {result.evaluated_now} evaluated now{refined}, {result.skipped} already stored "
                   f"({store.url})")


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send Python's and native code's (file descriptor 1) output to stderr meanwhile."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no usable descriptors (embedded use): Python-level redirect only
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _mark(store, name: str, status: str) -> None:
    try:
        st = store.get_study(name, missing_ok=True)
        if st is not None and st.status == "running":
            store.set_status(st, status)
    except Exception:
        pass
