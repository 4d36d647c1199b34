#!/usr/bin/env bash
# The GPU check: the one prepared command for a borrowed machine with an NVIDIA GPU (H100/H200, sm_90), which
# has Python 3.12, numpy and PyTorch but no TVM. It runs the runtime-only bundle that tools/gpu_bundle.py built
# on a machine with edgeprune's venv: resnet20 and mobilenetv2 compiled for the `h100-sm90` profile (TVM's
# default GPU schedules, SASS + PTX for sm_90), TVM's runtime libraries without its compiler, tvm_ffi for
# cp312. For each model: the output on cuda(0) against PyTorch's (max abs diff), and TVM's latency against
# PyTorch eager on the same GPU, interleaved. Writes bench/results/gpu.md and gpu.json (and copies both into
# $OUT when it is set, where the device tool returns files from). Fails at once, saying why, where there is no
# bundle, no GPU, or TVM's CUDA runtime cannot load.
#
# Here (edgeprune's venv; build/ is git-ignored, so the binaries never reach git):
#   .venv/bin/python tools/gpu_bundle.py              # writes build/gpu-bundle (about 33 MiB; refused over 60)
# then on the GPU machine, with build/gpu-bundle carried beside the working tree (the device tool, called from
# the checkout that holds build/gpu-bundle: command "bash tools/check_gpu.sh", carry ["build/gpu-bundle"],
# timeout_s 300, then give the machine back; its duration there is not measured yet):
#   tools/check_gpu.sh                                # BUNDLE=build/gpu-bundle PYTHON=python3 ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUNDLE=${BUNDLE:-build/gpu-bundle}
ROUNDS=${ROUNDS:-5}
RESULTS=bench/results
die() { echo "check_gpu: $*" >&2; exit 1; }

[ -f "$BUNDLE/run.py" ] && [ -f "$BUNDLE/bundle.json" ] \
  || die "no bundle at $BUNDLE: build it where edgeprune's venv is (.venv/bin/python tools/gpu_bundle.py) and carry that folder here"
command -v nvidia-smi >/dev/null || die "no NVIDIA driver here (nvidia-smi not found): run this on a machine with a GPU"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n1 | grep -q . || die "nvidia-smi sees no GPU"

mkdir -p "$RESULTS"
set +e
"$PY" "$BUNDLE/run.py" --out "$RESULTS" --name gpu --rounds "$ROUNDS" 2> >(grep -v "Warning: Scope Loaded" >&2)
status=$?
set -e
if [ -n "${OUT:-}" ] && [ -f "$RESULTS/gpu.md" ]; then cp "$RESULTS/gpu.md" "$RESULTS/gpu.json" "$OUT/"; fi
[ "$status" -eq 0 ] || die "the bundle's run.py failed (exit $status; 2: outputs differ from PyTorch's)"
