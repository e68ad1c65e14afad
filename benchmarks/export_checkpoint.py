"""Compressed checkpoints against the front's promise, in one run: bytes, load time, latency.

For each front policy of a digits study and a tiny-lm study (searched here into a temporary
database, or read from ``--db``): export it (``front export --format checkpoint``), compare
``model.safetensors`` with the front's ``size`` (what the cost model counts, then everything it
does not), time ``autocomp.load_compressed``, and time a forward of the loaded model against the
fp32 model (alternately, same batch, same thread count); where the ``torchao`` export format is
registered, also against torchao's model of the same policy (``--format torchao --apply``).
Ratios > 1 mean the compressed model is faster.

    python benchmarks/export_checkpoint.py [--db sqlite:///s.db --digits STUDY --lm STUDY]
        [--policies 3] [--threads 2] [--repeats 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def search(db: str) -> tuple[str, ...]:
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store
    from autocomp.workers.session import ensure_ray

    ensure_ray(None, num_cpus=2)
    store = Store(db)
    run_search(SearchConfig(model="digits", points=4, proxy="fisher", baselines=(4,)), store, "bench-digits")
    run_search(SearchConfig(model="digits", space="prune_quant", budget="size<=15%", points=3, proxy="fisher",
                            baselines=()), store, "bench-pq")
    run_search(SearchConfig(model="tiny-lm", space="weight_only", budget="size<=30%", points=3, proxy="fisher",
                            baselines=()), store, "bench-lm")
    store.dispose()
    return "bench-digits", "bench-pq", "bench-lm"


def torchao_latency(wl, policy, fp32_fn, x, dev, repeats: int, workdir: Path) -> str:
    """fp32 / torchao latency ratio for the same policy, or why there is none."""
    from autocomp.export import list_formats

    if "torchao" not in list_formats():
        return "torchao format not registered"
    try:
        from autocomp.export.torchao_export import export_torchao, load_torchao
        from autocomp.kernels.timing import measure_pair

        d = workdir / f"ao-{policy.id}"
        d.mkdir()
        export_torchao(wl.model(), policy, d, apply=True)
        ao = load_torchao(d, wl.model_factory())
        with torch.no_grad():
            t_fp, t_ao = measure_pair(fp32_fn, lambda: ao(x), dev, repeats)
        return f"{t_ao * 1e3:.3f} ms (x{t_fp / t_ao:.2f} vs fp32)"
    except Exception as e:  # a peer's failure is a figure here, not a crash of the benchmark
        return f"torchao: {type(e).__name__}: {str(e).splitlines()[0][:80]}"


def bench_study(db: str, study: str, n: int, repeats: int, workdir: Path, rows: list) -> None:
    import autocomp
    from autocomp.kernels.timing import measure_pair
    from autocomp.report import front
    from autocomp.stages.export import export_policy
    from autocomp.store import Store
    from autocomp.workload import load_workload

    store = Store(db)
    st = store.get_study(study)
    pts = [p for p in front(store, st) if p["on_front"] and not p["baseline"]][:n]
    wl = load_workload(st.config["model"])
    x = wl.sample_input()
    fp32 = wl.model()
    dev = torch.device("cpu")
    from autocomp.modules import call_model
    from autocomp.policy import Policy

    for p in pts:
        out = workdir / f"{study}-{p['policy_id']}"
        t0 = time.perf_counter()
        export_policy(store, study, p["policy_id"], "checkpoint", out, trust_stored_model=True)
        t_export = time.perf_counter() - t0
        man = json.loads((out / "manifest.json").read_text())
        file_b = (out / "model.safetensors").stat().st_size
        tensors = sum(man["bytes"].values())
        header = file_b - tensors
        t0 = time.perf_counter()
        loaded = autocomp.load_compressed(out, wl.model_factory)
        t_load = time.perf_counter() - t0
        with torch.no_grad():
            t_fp, t_q = measure_pair(lambda: call_model(fp32, x), lambda: call_model(loaded, x), dev, repeats)
        ao = torchao_latency(wl, Policy.from_dict(store.get_policy(st, p["policy_id"]).policy),
                             lambda: call_model(fp32, x), x, dev, repeats, workdir)
        row = {"study": study, "policy": p["policy_id"], "front_size": p["size"], "tensors": tensors, "header": header,
               "file": file_b, "file_vs_front_pct": 100 * (file_b / p["size"] - 1), "bytes": man["bytes"],
               "accounting": man["front_size_counts"], "export_s": t_export, "load_s": t_load, "fp32_ms": t_fp * 1e3,
               "loaded_ms": t_q * 1e3, "speedup": t_fp / t_q, "torchao": ao}
        rows.append(row)
        print(f"{study:12s} {p['policy_id']}  front {p['size']:9.0f} B  file {file_b:9d} B "
              f"({row['file_vs_front_pct']:+.2f} %; tensors {tensors} B, header {header} B; "
              + ", ".join(f"{k} {v}" for k, v in man["bytes"].items() if v) + ")", flush=True)
        print(f"{'':12s} export {t_export:.2f} s  load {t_load * 1e3:.0f} ms  fp32 {t_fp * 1e3:.3f} ms  "
              f"loaded {t_q * 1e3:.3f} ms (x{t_fp / t_q:.2f} vs fp32)  torchao {ao}", flush=True)
    store.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="an existing study database (default: search into a temporary one)")
    ap.add_argument("--digits", default="bench-digits")
    ap.add_argument("--lm", default="bench-lm", help="the language-model study ('' for none)")
    ap.add_argument("--policies", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.machine()} {platform.processor()}, torch {torch.__version__}, threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db, studies = args.db, tuple(s for s in (args.digits, args.lm) if s)
        if db is None:
            db = f"sqlite:///{work / 'bench.db'}"
            studies = search(db)
        rows: list = []
        for s in studies:
            bench_study(db, s, args.policies, args.repeats, work, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
