"""``autocomp search``."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sys
from typing import Callable, Optional

import typer

from autocomp.cli._common import DB_OPTION, default_study_name, fail, guarded, hf_options, study_name
from autocomp.cli.tables import print_front


@guarded
def search_cmd(
    model: str = typer.Option("digits", "--model", "-m", help="Built-in name, package.module:factory or file.py:factory."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="e.g. 'size<=25%', 'size<=1.5MB,bitops<=30%', 'avg_bits<=4' [default: size<=25%; with --target: the whole space, MINIMISE<=100%]."),
    study: Optional[str] = typer.Option(None, "--study", "-s", help="Study name; an existing name resumes that study."),
    db: Optional[str] = DB_OPTION,
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address (auto, ray://host:port); default: local Ray."),
    space: str = typer.Option("mixed_precision", "--space", help="Search space: built-in name or YAML file."),
    proxy: str = typer.Option("loss_delta", "--proxy", help="Sensitivity proxy (see `autocomp proxies list`), or auto: a small audit picks the best."),
    data: str = typer.Option("real", "--data", help="Proxies' calibration data: real, or distilled (ZeroQ, from BatchNorm statistics); with an hf: model, a text or JSONL FILE to calibrate and evaluate on."),
    task: Optional[str] = typer.Option(None, "--task", help="With an hf: model: causal-lm or encoder [default: from its config]."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="With an hf: model: tokens per sequence [default: 128]."),
    allocator: str = typer.Option("ilp", "--allocator", help="Allocator: ilp (any constraints; HiGHS when installed, else CBC) or dp (exact DP, one constraint)."),
    points: int = typer.Option(12, "--points", help="Budget points in the sweep."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Evaluator actors (default: one per CPU)."),
    device: str = typer.Option("auto", "--device", help="Proxy tasks and evaluator actors: auto (cuda when the Ray cluster reports GPUs), cpu, cuda."),
    eval_dtype: str = typer.Option("float32", "--eval-dtype", help="Evaluation precision (autocast): float32, float16, bfloat16."),
    quantizer: str = typer.Option("rtn", "--quantizer", help="How weights become codes: rtn (round-to-nearest), gptq, awq, ...; options as gptq(act_order=True); compositions as gptq+bias_correction."),
    seed: int = typer.Option(0, "--seed"),
    refine: int = typer.Option(0, "--refine", help="Optuna refinement evaluations after the sweep (resumable; 0: none)."),
    refine_mode: str = typer.Option("ptq", "--refine-mode", help="ptq: PTQ on Ray actors; qat: QAT as Ray Tune trials."),
    refine_sampler: str = typer.Option("auto", "--refine-sampler", help="auto (NSGA-II for ptq, TPE for qat), nsga2, tpe, random."),
    latency_table: Optional[str] = typer.Option(None, "--latency-table", help="Per-layer latency table from `autocomp profile-latency` (for latency budgets)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Quality target: bisect for the cheapest policy meeting it, e.g. 'drop<=1%', 'drop<=0.5pt', 'accuracy>=0.97', 'perplexity<=+5%'."),
    minimise: str = typer.Option("size", "--minimise", help="With --target: the cost metric to minimise (size, bitops, avg_bits, latency)."),
    target_tol: float = typer.Option(0.02, "--target-tol", help="With --target: stop when the bracket is this narrow (share of fp32's cost)."),
    max_evals: int = typer.Option(12, "--max-evals", help="With --target: most policies the bisection probes."),
    interactions: int = typer.Option(0, "--interactions", help="Measure pairwise interaction terms of the K most sensitive layers (and their neighbours) and give them to the ILP (0: additive)."),
    repair: int = typer.Option(0, "--repair", help="Evaluations for re-measuring the best policy's neighbours and keeping what measures better (0: none)."),
    trials: Optional[str] = typer.Option(None, "--trials", help="Training trials after the sweep, as Ray Tune trials (resumable): qat (fine-tune the best --top policies of the PTQ front) or nas (quantization-aware NAS, --nas-samples)."),
    top: int = typer.Option(3, "--top", help="With --trials qat: fine-tune the K best policies of the PTQ front."),
    qat: str = typer.Option("", "--qat", help="With --trials qat: the qat evaluator's options, e.g. 'estimator=reste,steps=200,learn_scales=true' (each options set is its own trial)."),
    trials_per_policy: int = typer.Option(1, "--trials-per-policy", help="With --trials qat: trials per policy; above 1 Optuna samples each trial's estimator, its parameters and lr (those --qat leaves open)."),
    trial_steps: Optional[int] = typer.Option(None, "--trial-steps", help="Step budget of each QAT or NAS trial (qat: its steps option)."),
    nas_samples: int = typer.Option(0, "--nas-samples", help="With --trials nas: the NAS trials the study should hold."),
    trial_retries: int = typer.Option(1, "--trial-retries", help="With --trials: reruns of a trial that raised before it is recorded failed."),
    as_json: bool = typer.Option(False, "--json", help="Print the front as JSON."),
) -> None:
    """Search per-layer compression policies under a budget; prints the Pareto front."""
    from autocomp.progress import RichStages
    from autocomp.search import SearchConfig, check_config, run_search
    from autocomp.stages.status import SIGNALS
    from autocomp.store import Store

    if budget is None:
        budget = f"{minimise}<=100%" if target is not None else "size<=25%"
    model, data = hf_options(model, data, task, seq_len)
    cfg = SearchConfig(model=model, budget=budget, space=space, proxy=proxy, data=data, allocator=allocator,
                       points=points, seed=seed, workers=workers, address=address, refine=refine,
                       refine_mode=refine_mode, refine_sampler=refine_sampler,
                       latency_table=latency_table, target=target, minimise=minimise, target_tol=target_tol,
                       max_evals=max_evals, interactions=interactions, repair=repair, device=device,
                       eval_dtype=eval_dtype, quantizer=quantizer, trials=trials, top=top, qat=qat,
                       trials_per_policy=trials_per_policy, trial_steps=trial_steps, nas_samples=nas_samples,
                       trial_retries=trial_retries)
    name = study_name(study) if study else default_study_name(model, f"{dt.datetime.now():%Y%m%d-%H%M%S}")
    check_config(cfg)  # before the database file is opened (or created)
    store = Store(db)
    stages = RichStages()
    restore = _record_signals()
    try:
        # Ray (cluster events such as "Raylet is terminated") and native solvers (banners) print
        # on stdout: keep stdout for the result (--json must parse), the rest goes to stderr.
        with _stdout_to_stderr():
            result = run_search(cfg, store, name, stages)
    except BaseException as e:
        stages.close(failed=True)
        if not (isinstance(e, KeyboardInterrupt) or SIGNALS):
            raise
        # run_search marked the study interrupted; say how to go on. After a signal any error is
        # its echo (e.g. a database call it cut short), not a second failure to report.
        fail(f"interrupted; stored results are kept: resume with `{cfg.resume_command(name)}`",
             143 if isinstance(e, Terminated) or signal.SIGTERM in SIGNALS else 130)
    finally:
        restore()
    stages.close()
    if as_json:
        doc = {"study": name, "front": result.front, **({"target": result.target} if target is not None else {})}
        typer.echo(json.dumps(doc, indent=1, default=str))
    else:
        print_front(name, result.front, store.get_study(name).config)
        refined = f", {result.refined} refined by Optuna" if refine else ""
        refined += f", {result.trialled} {trials.upper()} trial(s) run" if trials else ""
        typer.echo(f"study {name!r}: {result.evaluated_now} evaluated now{refined}, {result.skipped} already stored "
                   f"({store.shown_url})")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the study is marked interrupted and the resume command printed."""


def _record_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM raise as Ctrl-C does, and are recorded (:func:`note_signal`) so that an
    interrupt a driver swallows still ends the run as interrupted. Returns what puts the
    previous handlers back (an embedding process, or a test calling the CLI, keeps its own)."""
    from autocomp.stages.status import SIGNALS, note_signal

    SIGNALS.clear()   # a signal an earlier command of this process saw is not this one's

    def on_sigint(signum: int, _frame: object) -> None:
        note_signal(signum)
        raise KeyboardInterrupt

    def on_sigterm(signum: int, _frame: object) -> None:
        note_signal(signum)
        raise Terminated(f"signal {signum}")

    try:
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        if saved[signal.SIGINT] is signal.default_int_handler:   # a host's own handler is kept
            signal.signal(signal.SIGINT, on_sigint)
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave the defaults
        return lambda: None

    def restore() -> None:
        for s, h in saved.items():
            if h is not None:
                signal.signal(s, h)
    return restore


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
