"""Transformers end to end: per-stage times of a search, evaluation time per policy against a plain
fp32 forward pass, and the peak memory of an evaluator on a BERT-base-shaped encoder.

Two workloads:

* ``tiny-lm`` (the built-in GPT-2-style causal LM, perplexity);
* ``bert-base``: ``BertModel(BertConfig())`` (~110 M parameters incl. embeddings, random weights,
  seed 0, no pooler), on the standard library's bytes as token ids (``BERT_CALIB`` sequences of
  128 for calibration, ``BERT_EVAL`` for evaluation), metric ``cosine`` to its fp32 outputs.

For each: a whole search (tiny-lm: proxy ``loss_delta``, 12 budget points; bert-base: proxy
``quant_mse``, 3 points; plus the baselines), its stage times and the stored per-policy
evaluation seconds (``Metrics.seconds``: applying the policy to a copy of the model and scoring
it; the per-worker setup excluded). Then a fresh process does what one evaluator actor does
(load the workload, set the PTQ evaluator up, evaluate ``MEM_POLICIES`` uniform policies) and
reports each evaluation's seconds against a plain fp32 forward pass over the same evaluation set
timed in that process just before it (target: at most 3x), and its peak RSS (``VmHWM`` of ``/proc/self/status``) above
the RSS it had after importing torch and transformers, against the fp32 model's bytes
(parameters and buffers; target: at most 3x).

Run (2 cores: a few minutes, most of it BERT)::

    python benchmarks/transformer_e2e.py                  # both
    python benchmarks/transformer_e2e.py --only tiny-lm
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
BERT_SPEC = f"{HERE}:bert_base"
BERT_CALIB, BERT_EVAL = 8, 32   # sequences of 128 tokens (32: the hf: workloads' evaluation default)
MEM_POLICIES = 3


def bert_base():
    """The BERT-base-shaped encoder workload (random weights; see the module docstring)."""
    from transformers import BertConfig, BertModel

    from autocomp.workload import Workload, cosine_fidelity, cosine_loss
    from autocomp.workloads.text import batched, blocks
    from autocomp.workloads.tiny_lm import byte_streams

    torch.manual_seed(0)
    model = BertModel(BertConfig(), add_pooling_layer=False).eval()
    train, val = byte_streams()
    with torch.no_grad():
        def with_ref(b):
            return [(x, model(x).last_hidden_state) for x, _ in batched(b, 4)]
        calib, ev = with_ref(blocks(train, 128)[:BERT_CALIB]), with_ref(blocks(val, 128)[:BERT_EVAL])
    return Workload("bert-base", lambda: model, calib, ev, metric=cosine_fidelity, loss=cosine_loss, quality="cosine")


def fp32_forward_seconds(spec: str, repeats: int = 3) -> tuple[float, int]:
    """Best-of-``repeats`` wall time of one plain fp32 forward pass over the evaluation set, and the model's bytes."""
    from autocomp.modules import call_model
    from autocomp.workload import load_workload

    wl = load_workload(spec)
    m = wl.model()
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            for x, _ in wl.eval:
                call_model(m, x)
            best = min(best, time.perf_counter() - t)
    nbytes = sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))
    return best, nbytes


def run_search(spec: str, proxy: str, points: int, workers: int, space: str) -> dict:
    from autocomp.progress import Stages
    from autocomp.search import SearchConfig, run_search as search
    from autocomp.store import Store

    with tempfile.TemporaryDirectory() as d:
        store = Store(f"sqlite:///{d}/bench.db")
        cfg = SearchConfig(model=spec, proxy=proxy, points=points, workers=workers, space=space)
        t = time.perf_counter()
        res = search(cfg, store, "bench", Stages())
        total = time.perf_counter() - t
        evals = [e.metrics().seconds for e in store.list_evaluations(res.study)]
        fp32 = store.get_study("bench").config.get("fp32", {})
        store.dispose()
    return {"stages": res.stage_seconds, "total": total, "eval_seconds": [s for s in evals if s is not None],
            "front": res.front, "fp32": fp32}


def front_table(points: list[dict], fp32: dict) -> str:
    """The front as a Markdown table (quality, its change against fp32, size as % of fp32)."""
    from autocomp.report import change_vs_fp32

    q = points[0]["quality_metric"]
    rows = [f"| policy | kind | {q} | vs fp32 | size % | label |", "|---|---|---:|---:|---:|---|"]
    for p in points:
        kind = "baseline" if p["baseline"] else "front"
        size = f"{100 * p['size'] / fp32['size']:.1f}" if fp32.get("size") else "-"
        rows.append(f"| {p['policy_id']} | {kind} | {p['quality']:.4f} | {change_vs_fp32(p, points)} | {size} | "
                    f"{p.get('label', '')} |")
    return "\n".join(rows)


MEM_CHILD = r"""
import json, sys, time, torch, transformers
from autocomp.modules import call_model
from autocomp.evaluators import get_evaluator
from autocomp.policy import Choice, Policy
from autocomp.modules import quantizable_layers
from autocomp.workload import load_workload
def rss():
    # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
base = rss()
wl = load_workload(sys.argv[1]); wl.model()
loaded = rss()
ev = get_evaluator("ptq"); ev.prepare(wl)
setup = rss()
names = [n for n, m in quantizable_layers(wl.model()) if type(m).__name__ != "Embedding"]
def fp32_forward():
    t = time.perf_counter()
    with torch.no_grad():
        for x, _ in wl.eval:
            call_model(wl.model(), x)
    return time.perf_counter() - t
secs, fwd = [], []
for bits in (8, 4, 2)[:int(sys.argv[2])]:   # interleaved: both see the same load
    fwd.append(fp32_forward())
    secs.append(ev.evaluate(wl, Policy.uniform(names, Choice(w_bits=bits, a_bits=8))).seconds)
print(json.dumps({"base": base, "loaded": loaded, "setup": setup, "peak": rss(), "eval_seconds": secs, "fwd": fwd}))
"""


def actor_memory(spec: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEM_CHILD, spec, str(MEM_POLICIES)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(name: str, spec: str, proxy: str, points: int, workers: int, space: str, search: bool) -> None:
    fwd, nbytes = fp32_forward_seconds(spec)
    print(f"\n## {name}")
    print(f"fp32 model: {nbytes / 2**20:.1f} MiB; one fp32 forward over the evaluation set: {fwd:.3f} s")
    if search:
        s = run_search(spec, proxy, points, workers, space)
        med = statistics.median(s["eval_seconds"])
        print(f"search (proxy {proxy}, space {space}, {points} points, {workers} workers), stage seconds: "
              + ", ".join(f"{k} {v:.1f}" for k, v in s["stages"].items()) + f"; total {s['total']:.1f}")
        print(f"search evaluations: {len(s['eval_seconds'])}, median {med:.3f} s, max {max(s['eval_seconds']):.3f} s "
              f"per policy ({workers} actors of one thread each) vs the fp32 forward timed first in this process: "
              f"{med / fwd:.2f}x")
        print(front_table(s["front"], s["fp32"]))
    m = actor_memory(spec)
    peak = m["peak"] - m["base"]
    med, f = statistics.median(m["eval_seconds"]), statistics.median(m["fwd"])
    print(f"one evaluator process: evaluation median {med:.3f} s per policy, fp32 forward over the evaluation set "
          f"{f:.3f} s (interleaved) -> {med / f:.2f}x (target <= 3x)")
    print(f"its RSS above torch+transformers imports: model loaded {(m['loaded'] - m['base']) / 2**20:.0f} MiB, after "
          f"setup {(m['setup'] - m['base']) / 2**20:.0f} MiB, peak after {MEM_POLICIES} evaluations "
          f"{peak / 2**20:.0f} MiB -> {peak / nbytes:.2f}x the fp32 model's bytes (target <= 3x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("tiny-lm", "bert-base"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--space", default="mixed_precision")
    ap.add_argument("--no-bert-search", action="store_true", help="bert-base: only the evaluator process (time, memory)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "tiny-lm"):
        bench("tiny-lm", "tiny-lm", "loss_delta", 12, args.workers, args.space, search=True)
    if args.only in (None, "bert-base"):
        bench("bert-base", BERT_SPEC, "quant_mse", 3, args.workers, args.space, search=not args.no_bert_search)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
