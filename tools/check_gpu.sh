#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, run the whole job on the built-in `local-gpu` device (this GPU
# behind a loopback RPC farm): profile the layers (tuned), prune to a budget, compile with tuning, verify and
# measure, all through RPC. Writes bench/results/gpu.md (GPU, profile entries, prediction error, measured
# speedup vs budget). Meant to finish within 10 minutes on a borrowed machine; fails at once, saying why, where
# there is no GPU or TVM cannot use it.
#
#   PYTHON=python3 tools/check_gpu.sh          # edgeprune's dependencies (apache-tvm etc.) importable there
#   MODEL=vgg11 WIDTH=0.25 TRIALS=4 TARGET=0.7x tools/check_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODEL=${MODEL:-vgg11} WIDTH=${WIDTH:-0.25} TRIALS=${TRIALS:-4} TARGET=${TARGET:-0.7x}
PORT=${EDGEPRUNE_LOCAL_GPU_PORT:-9290}
RUN_DIR=${RUN_DIR:-runs/check-gpu}
REPORT=bench/results/gpu.md
die() { echo "check_gpu: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null || die "no NVIDIA driver here (nvidia-smi not found): run this on a machine with a GPU"
GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1) || true
[ -n "$GPU" ] || die "nvidia-smi sees no GPU"
"$PY" -c "import tvm, torch, onnxsim, torch_pruning" 2>/dev/null \
  || die "$PY cannot import edgeprune's dependencies (pip install -e '.[cuda]', or carry the wheels)"
# TVM's CUDA runtime (libtvm_runtime_cuda.so) links libcudart.so.13: put the first one found on the loader's path.
CANDIDATES=$("$PY" -c 'import nvidia, os; print(" ".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' \
  2>/dev/null || true)
for dir in ${CUDA_PATH:+$CUDA_PATH/lib64} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $CANDIDATES; do
  if [ -e "$dir/libcudart.so.13" ]; then export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; fi
done
"$PY" -c "import sys, tvm; sys.exit(0 if tvm.cuda(0).exist else 1)" 2>/dev/null \
  || die "TVM does not see the GPU ($GPU): its CUDA runtime needs libcudart.so.13 and a CUDA 13 driver"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" EDGEPRUNE_LOCAL_GPU_PORT=$PORT
"$PY" -m edgeprune farm up --servers 1 --port "$PORT" --key local-gpu
trap '"$PY" -m edgeprune farm down --port "$PORT" >/dev/null 2>&1 || true' EXIT
"$PY" -m edgeprune devices check local-gpu
rm -rf "$RUN_DIR" && mkdir -p "$(dirname "$RUN_DIR")"
set +e
timeout 540 "$PY" -m edgeprune run "$MODEL" --device local-gpu --width "$WIDTH" --data digits --target "$TARGET" \
  --trials "$TRIALS" --train-epochs 1 --finetune-epochs 1 --search-minutes 0.3 --generations 5 --max-rounds 2 \
  --no-deploy --run-dir "$RUN_DIR" --json >"$RUN_DIR.json"
status=$?
set -e
[ "$status" -le 1 ] || die "edgeprune run failed (exit $status); see $RUN_DIR"

mkdir -p "$(dirname "$REPORT")"
GPU="$GPU" "$PY" - "$RUN_DIR" "$RUN_DIR.json" >"$REPORT" <<'EOF'
import json, os, sys
from pathlib import Path
run_dir, summary = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
profile = json.loads((run_dir / "profile.json").read_text())
print(f"# edgeprune on a GPU: {summary['model']} on local-gpu\n\nGPU: {os.environ['GPU']}\n")
print(f"Profile: {profile['entries_total']} entries ({profile['entries_measured']} measured, "
      f"{profile['tuning_trials']} tuning trials) in {profile['seconds']} s; LUT {profile['lut']}\n")
print("| round | predicted ms | measured ms | prediction error | baseline ms | target ms | speedup | meets |")
print("|---|---|---|---|---|---|---|---|")
for r in summary["round_details"]:
    error = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]  # the latency table's own error
    print(f"| {r['round']} | {r['predicted_ms']:.4f} | {r['measured_ms']:.4f} | {error:+.1%} | {r['baseline_ms']:.4f} "
          f"| {r['target_ms']:.4f} | {r['baseline_ms'] / r['measured_ms']:.2f}x | {r['meets_target']} |")
print(f"\nBudget {summary['target_ms']:.4f} ms: {'met' if summary['meets_target'] else 'missed'}, "
      f"speedup {summary['speedup']:.2f}x, {summary['seconds']} s in all.")
EOF
cat "$REPORT"
