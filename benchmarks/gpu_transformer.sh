#!/usr/bin/env bash
# Per-stage times of one search on a transformer, on the CPU and (when one is lent) on the GPU:
#   bash benchmarks/gpu_transformer.sh              # cpu, then cuda when torch sees a GPU
#   DEVICES=cpu bash benchmarks/gpu_transformer.sh  # the CPU half only (what runs without a GPU)
# Environment: MODEL (tiny-lm), SPACE (mixed_precision), PROXY (hessian_trace), BUDGET (size<=30%),
# POINTS (4), EVAL_DTYPE (float32; the GPU run also repeats evaluation in bfloat16), WORKERS (2),
# OUT (./gpu_transformer_out). Each run has its own time limit (LIMIT, seconds) so that a hang
# cannot eat the device budget; the table is printed at the end and saved as $OUT/stages.txt.
set -u
OUT="${OUT:-./gpu_transformer_out}"
MODEL="${MODEL:-tiny-lm}"
SPACE="${SPACE:-mixed_precision}"
PROXY="${PROXY:-hessian_trace}"
BUDGET="${BUDGET:-size<=30%}"
POINTS="${POINTS:-4}"
WORKERS="${WORKERS:-2}"
LIMIT="${LIMIT:-240}"
mkdir -p "$OUT"
[ -f .venv/bin/activate ] && . .venv/bin/activate

if [ -z "${DEVICES:-}" ]; then
  if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    DEVICES="cpu cuda"
  else
    DEVICES="cpu"
  fi
fi
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# One search, in a fresh process (its own local Ray, sized to the machine): JSON stage times.
run_one() {  # device eval_dtype
  local device="$1" dtype="$2" tag="$1-$2"
  rm -f "$OUT/$tag.db"
  timeout "$LIMIT" python - "$device" "$dtype" "$OUT/$tag.db" > "$OUT/$tag.json" 2> "$OUT/$tag.log" <<EOF
import json, sys, time
from autocomp.search import SearchConfig, run_search
from autocomp.store import Store
device, dtype, db = sys.argv[1:4]
cfg = SearchConfig(model="$MODEL", budget="$BUDGET", space="$SPACE", proxy="$PROXY", points=$POINTS,
                   workers=$WORKERS, device=device, eval_dtype=dtype)
t0 = time.perf_counter()
res = run_search(cfg, Store(f"sqlite:///{db}"), "bench")
q = [r["quality"] for r in res.front]
print(json.dumps({"stages": res.stage_seconds, "total": time.perf_counter() - t0, "front": len(res.front),
                  "quality": [min(q), max(q)] if q else None}))
EOF
  echo "$tag rc=$?" | tee -a "$OUT/runs.txt"
}

for d in $DEVICES; do
  run_one "$d" "${EVAL_DTYPE:-float32}"
  [ "$d" = cuda ] && run_one cuda bfloat16
done

python - "$OUT" > "$OUT/stages.txt" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
runs = {}
for f in sorted(out.glob("*.json")):
    try:
        runs[f.stem] = json.loads(f.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError):
        runs[f.stem] = None
ok = {k: v for k, v in runs.items() if v}
cols = list(ok)
stages = list(dict.fromkeys(s for v in ok.values() for s in v["stages"]))
base = next((c for c in cols if c.startswith("cpu")), None)
print(f"{'stage':28s}" + "".join(f"{c:>18s}" for c in cols) + ("".join(f"{'x vs ' + base:>18s}" for c in cols if c != base) if base else ""))
for s in stages + ["total"]:
    vals = [ok[c]["stages"].get(s) if s != "total" else ok[c]["total"] for c in cols]
    row = f"{s:28s}" + "".join(f"{v:18.2f}" if v is not None else f"{'-':>18s}" for v in vals)
    if base:
        b = ok[base]["stages"].get(s) if s != "total" else ok[base]["total"]
        for c, v in zip(cols, vals):
            if c != base:
                row += f"{(b / v) if b and v else float('nan'):18.2f}"
    print(row)
print("front quality (min..max): " + ", ".join(f"{c}={ok[c]['quality'][0]:.4f}..{ok[c]['quality'][1]:.4f}"
                                             for c in cols if ok[c]["quality"]))
for k, v in runs.items():
    if not v:
        print(f"{k}: no result (see {k}.log)")
EOF
cat "$OUT/stages.txt"
