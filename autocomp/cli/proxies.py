"""``autocomp proxies list`` and ``autocomp proxies audit``."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from autocomp.cli._common import DB_OPTION, at_least, default_study_name, guarded, study_name

proxies_app = typer.Typer(help="Sensitivity proxies: list them, audit how well they predict accuracy.",
                          no_args_is_help=True)


@proxies_app.command("list")
@guarded
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered proxy names and saved evolved ones (usable as `autocomp search --proxy NAME`, plus `auto`)."""
    from autocomp.proxies import list_proxies
    from autocomp.proxies.evolved import saved_names

    names = list_proxies() + [n for n in saved_names() if n not in list_proxies()]
    typer.echo(json.dumps(names) if as_json else "\n".join(names + ["auto  (audit, then use the best)"]))


@proxies_app.command("audit")
@guarded
def audit_cmd(
    model: str = typer.Option("digits", "--model", "-m", help="Built-in name, package.module:factory or file.py:factory."),
    samples: int = typer.Option(24, "--samples", "-k", help="Policies sampled across the budget range."),
    study: Optional[str] = typer.Option(None, "--study", "-s", help="Study that stores the audit [default: audit-<model>]."),
    db: Optional[str] = DB_OPTION,
    proxy: Optional[List[str]] = typer.Option(None, "--proxy", help="Proxies to audit (repeatable) [default: all]."),
    space: str = typer.Option("mixed_precision", "--space", help="Search space: built-in name or YAML file."),
    quantizer: Optional[List[str]] = typer.Option(
        None, "--quantizer", "-q",
        help="Quantizers the policies are evaluated with (repeatable or a comma list; rtn, gptq, "
             "awq+bias_correction, ...): a row per proxy and quantizer [default: rtn]."),
    data: str = typer.Option("real", "--data", help="Calibration data for the proxies: real or distilled (ZeroQ)."),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray workers (default: one per CPU)."),
    seed: int = typer.Option(0, "--seed"),
    band_tol: float = typer.Option(0.05, "--band-tol", help="Relative cost tolerance of a cost band."),
    band_mates: int = typer.Option(0, "--band-mates",
                                   help="Extra policies of about the same cost per sampled policy (fills the bands)."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Rank correlation (Spearman, Kendall) of each proxy's prediction with measured accuracy drops,
    over the whole sample and within cost bands (policies of about the same size)."""
    from autocomp.audit import AuditConfig, run_audit
    from autocomp.progress import RichStages
    from autocomp.store import Store

    at_least(samples, "--samples", 2)
    at_least(workers, "--workers")
    name = study_name(study) if study else default_study_name(f"audit-{model}")
    quantizers = split_specs(quantizer) or ("rtn",)
    cfg = AuditConfig(model=model, samples=samples, proxies=tuple(proxy or ()), space=space, seed=seed,
                      workers=workers, address=address, data=data, quantizers=quantizers, band_tol=band_tol,
                      band_mates=band_mates)
    store = Store(db)
    stages = RichStages()
    try:
        rows = run_audit(cfg, store, name, stages)
    finally:
        stages.close()
    if as_json:
        typer.echo(json.dumps({"study": name, "audit": rows}, indent=1))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"proxy audit of {model!r}: {samples} policies, data={data} (study {name!r})"))
    for col in ("proxy", "quantizer", "spearman", "kendall", f"in-band ({band_tol:.0%})", "bands", "seconds"):
        t.add_column(col, justify="left" if col in ("proxy", "quantizer") else "right")
    fmt = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
    for r in rows:
        t.add_row(escape(r["proxy"]), escape(r["quantizer"]), fmt(r["spearman"]), fmt(r["kendall"]),
                  fmt(r["band_spearman"]), str(r["bands"]), f"{r['seconds']:.1f}")
    Console(width=120).print(t)


def split_specs(values: Optional[List[str]]) -> tuple[str, ...]:
    """``--quantizer`` values, each possibly a comma list, as specs (commas inside options kept).

    Example:
        >>> split_specs(["rtn,gptq(act_order=True, damp=0.02)", "awq+bias_correction"])
        ('rtn', 'gptq(act_order=True, damp=0.02)', 'awq+bias_correction')
    """
    out: list[str] = []
    for v in values or ():
        depth, start = 0, 0
        for i, ch in enumerate(v):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                out.append(v[start:i].strip())
                start = i + 1
        out.append(v[start:].strip())
    return tuple(out)


@proxies_app.command("bench")
@guarded
def bench_cmd(
    model: str = typer.Option("digits", "--model", "-m", help="Built-in name, package.module:factory or file.py:factory."),
    samples: int = typer.Option(40, "--samples", "-k", help="Policies: spread over the budget range and dense within cost bands."),
    study: Optional[str] = typer.Option(None, "--study", "-s", help="Study that stores the bench [default: bench-<model>]."),
    db: Optional[str] = DB_OPTION,
    space: str = typer.Option("mixed_precision", "--space", help="Search space: built-in name or YAML file."),
    compare: Optional[List[str]] = typer.Option(
        None, "--compare", help="Further hand-designed proxies to score for comparison (repeatable), e.g. lrp."),
    band_tol: float = typer.Option(0.05, "--band-tol", help="Relative cost tolerance of a cost band."),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray workers (default: one per CPU)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Evaluate sampled policies on Ray and store them with the per-layer primitives proxies are
    built from (a bench for `proxies evolve`); re-running resumes and re-evaluates nothing."""
    from autocomp.progress import RichStages
    from autocomp.stages.bench import BenchConfig, run_bench
    from autocomp.store import Store

    at_least(samples, "--samples", 4)
    at_least(workers, "--workers")
    name = study_name(study) if study else default_study_name(f"bench-{model}")
    cfg = BenchConfig(model=model, samples=samples, space=space, seed=seed, workers=workers, address=address,
                      band_tol=band_tol, compare=tuple(compare or ()))
    store = Store(db)
    stages = RichStages()
    try:
        out = run_bench(cfg, store, name, stages)
    finally:
        stages.close()
    typer.echo(f"bench {name!r}: {out['policies']} policies ({out['evaluated']} evaluated now), "
               f"proxies scored now: {', '.join(out['scored']) or 'none'}")


@proxies_app.command("evolve")
@guarded
def evolve_cmd(
    bench: str = typer.Option(..., "--bench", "-b", help="The bench study (`autocomp proxies bench`)."),
    db: Optional[str] = DB_OPTION,
    generations: int = typer.Option(10, "--generations", "-g"),
    population: int = typer.Option(32, "--population", "-p"),
    name: Optional[str] = typer.Option(None, "--name", help="Saved as evolved:NAME [default: the bench's name]."),
    out: Optional[str] = typer.Option(None, "--out", help="Save the expression here instead of proxies/evolved/NAME.json."),
    train_fraction: float = typer.Option(0.6, "--train-fraction", help="Share of the cost bands evolved on."),
    max_depth: int = typer.Option(3, "--max-depth", help="Deepest expression tree."),
    max_size: int = typer.Option(5, "--max-size", help="Most nodes in an expression tree."),
    validation: float = typer.Option(0.0, "--validation",
                                     help="Share of the training bands kept out of the fitness to pick the result."),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray workers (default: one per CPU)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Evolve a proxy expression on a bench (resumable), save it as JSON and register evolved:NAME;
    prints its held-out within-band Spearman beside the hand-designed proxies'."""
    from autocomp.errors import AutocompError
    from autocomp.evolution import EvolveConfig, run_evolution, save_evolved
    from autocomp.progress import RichStages
    from autocomp.store import Store

    at_least(workers, "--workers")
    label = name or bench
    if not label or not all(ch.isalnum() or ch in "._-" for ch in label):
        raise AutocompError(f"--name {label!r}: use letters, digits, '.', '_' and '-'")
    cfg = EvolveConfig(bench=bench, generations=generations, population=population, seed=seed,
                       train_fraction=train_fraction, max_depth=max_depth, max_size=max_size,
                       validation=validation, workers=workers,
                       address=address)
    cfg.check()
    store = Store(db, must_exist=True)
    stages = RichStages()
    try:
        result = run_evolution(cfg, store, stages)
    finally:
        stages.close()
    path = save_evolved(result, label, out)
    if as_json:
        typer.echo(json.dumps({**result, "path": str(path)}, indent=1))
        return
    fmt = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
    ref = f"evolved:{label if not out else path}"
    typer.echo(f"{ref}  =  {result['text']}   (saved to {path})")
    typer.echo(f"{'proxy':<24}{'held-out in-band':>18}{'held-out global':>17}")
    rows = [(ref, result["held_out"])] + list(result["hand_designed"].items())
    for proxy, r in rows:
        typer.echo(f"{proxy:<24}{fmt(r['band_spearman']):>18}{fmt(r['spearman']):>17}")
