"""``autocomp validate`` and ``autocomp profile-latency``: the winners on real low-bit kernels."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from autocomp.cli._common import DB_OPTION, at_least, guarded, read_store, study_name, writable_output

@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Time with ``n`` CPU threads, then give PyTorch its previous setting back."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


DEVICE_OPTION = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")


@guarded
def validate_cmd(
    study: str = typer.Argument(..., help="Study name."),
    policy: Optional[List[str]] = typer.Option(None, "--policy", "-p", help="Policy id (prefix); repeatable. Default: the front and baselines."),
    device: str = DEVICE_OPTION,
    db: Optional[str] = DB_OPTION,
    repeats: int = typer.Option(20, "--repeats", help="Timed forward passes per model (median)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the timings (default: PyTorch's)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The model to validate on (default: the study's, if built-in or trusted)."),
    trust_stored_model: bool = typer.Option(False, "--trust-stored-model", help="Import the model spec stored in the study (runs its code)."),
    backend: str = typer.Option("autocomp", "--backend", help="autocomp (its kernels), or torchao: also torchao's kernels, side by side."),
) -> None:
    """Run policies on low-bit kernels: error vs the simulation, latency vs fp32; stored in the study."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from autocomp.kernels.timing import resolve_device
    from autocomp.stages.validate import model_spec_to_run, validate_study
    from autocomp.workload import BUILTIN

    study_name(study)
    at_least(repeats, "--repeats")
    at_least(threads, "--threads")
    resolve_device(device)
    store = read_store(db)
    console = Console(width=140)
    stored = store.get_study(study).config.get("model")
    spec = model_spec_to_run(stored, model, trust_stored_model)     # refused here, before any import
    if not model and spec not in BUILTIN:
        console.print(escape(f"importing the study's stored model {spec!r} (--trust-stored-model)"))
    t = Table(title=escape(f"kernel validation of study {study!r}"))
    for col in ("policy", "device", "backends", "max rel err", "ok", "latency", "fp32", "speedup", "kernel acc"):
        t.add_column(col, justify="left" if col in ("policy", "device", "backends") else "right")

    def show(rep) -> None:
        console.print(f"validated {rep.policy_id}: {rep.latency * 1e3:.3g} ms ({rep.speedup:.2f}x), "
                      f"max rel err {rep.max_rel_err:.2e}")
        for note in rep.notes():  # layers no kernel takes (embeddings, zero points), each with why
            console.print(escape(f"  {note}"))

    if backend not in ("autocomp", "torchao"):
        from autocomp.errors import AutocompError

        raise AutocompError(f"unknown --backend {backend!r}: use autocomp or torchao")
    if backend == "torchao":
        from autocomp.kernels.torchao_backend import require_torchao

        require_torchao()
    compared: list = []
    with _threads(threads):
        reports = validate_study(store, study, policy or None, device, repeats, on_report=show, model=spec,
                                 backend=backend, on_compare=compared.append)
    if compared:
        from autocomp.cli.torchao_table import backend_tables

        for table in backend_tables(compared):
            console.print(table)
    for r in reports:
        t.add_row(r.policy_id, r.device, " ".join(f"{k}:{v}" for k, v in sorted(r.backends().items())) or "float",
                  f"{r.max_rel_err:.2e}", "yes" if r.ok else "NO", f"{r.latency * 1e3:.3g} ms",
                  f"{r.fp32_latency * 1e3:.3g} ms", f"{r.speedup:.2f}x",
                  f"{r.kernel_accuracy:.4f}" if r.kernel_accuracy is not None else "-")
    console.print(t)
    bad = [r.policy_id for r in reports if not r.ok]
    if bad:
        console.print(f"kernel outputs exceed the stated error bound for {', '.join(bad)}")
        raise typer.Exit(1)


@guarded
def profile_latency_cmd(
    model: str = typer.Option("digits", "--model", "-m", help="Built-in name, package.module:factory or file.py:factory."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the latency table (JSON)."),
    space: str = typer.Option("mixed_precision", "--space", help="Search space whose choices are timed."),
    device: str = DEVICE_OPTION,
    repeats: int = typer.Option(20, "--repeats", help="Timed calls per layer and choice (median)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the timings (default: PyTorch's)."),
) -> None:
    """Measure a per-layer, per-choice latency table for `autocomp search --latency-table`."""
    from autocomp.kernels.latency import profile_latency, save_latency_table
    from autocomp.kernels.timing import resolve_device
    from autocomp.search_spaces import load_space
    from autocomp.profile import profile_model
    from autocomp.workload import load_workload, validate_workload

    at_least(repeats, "--repeats")
    at_least(threads, "--threads")
    resolve_device(device)
    writable_output(output)
    sp = load_space(space)
    wl = load_workload(model)
    sp.check_layers(profile_model(validate_workload(wl), wl.sample_input()))
    with _threads(threads):
        doc = profile_latency(wl, sp, device, repeats, on_layer=lambda n: typer.echo(f"timed {n}"))
    save_latency_table(doc, output)
    n = sum(len(r) for r in doc["table"].values())
    typer.echo(f"wrote {n} latencies for {len(doc['table'])} layers on {doc['device']} to {output}")
