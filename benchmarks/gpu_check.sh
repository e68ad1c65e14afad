#!/usr/bin/env bash
# One-call GPU check for the low-bit kernels (run from the repository root on a CUDA machine):
#   bash benchmarks/gpu_check.sh            # results under ${OUT:-./gpu_check_out}
# 1. the GPU tests (compiled Triton kernels at N = K = 4096, digits policy validated on CUDA),
# 2. the kernel benchmark (int4 / ternary / binary / W8A8 at M = 1, 16, 128 vs fp16 matmul),
# 3. `autocomp profile-latency --device cuda` for digits.
# Each step has its own time limit so that a hang cannot eat the device budget.
set -u
OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
[ -f .venv/bin/activate ] && . .venv/bin/activate
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout 240 python -m pytest tests/kernels/test_gpu.py tests/kernels/test_triton_interpreter.py -q -p no:cacheprovider \
  > "$OUT/tests.txt" 2>&1; echo "gpu tests rc=$?" | tee -a "$OUT/tests.txt"
tail -5 "$OUT/tests.txt"
timeout 360 python benchmarks/kernels.py --gpu --repeats 50 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
timeout 90 python -m autocomp.cli profile-latency --model digits --device cuda --repeats 20 -o "$OUT/latency_cuda.json" \
  > "$OUT/profile_latency.txt" 2>&1; echo "profile-latency rc=$?" | tee -a "$OUT/profile_latency.txt"
