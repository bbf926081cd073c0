#!/usr/bin/env bash
# bench.gpu_check on a GPU machine lent through the device tool, in one call:
#   make gpu-wheels                        # here: what that machine lacks, as wheels
#   device run: carry [".wheelhouse"], command "bash bench/gpu_check.sh"
# Its python3 (a venv of its own) holds PyTorch with CUDA, ONNX Runtime, OpenCV
# and scikit-image; the wheels (gRPC, protobuf, OpenSlide, shapely, ...) go to a
# folder put ahead of them on PYTHONPATH, which the services started by the
# bench inherit. No network is needed. The report goes to $OUT (the folder
# the tool brings back), else bench/out/gpu; arguments go to bench.gpu_check.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${OUT:-bench/out/gpu}"
site=/tmp/gpu-check-site
mkdir -p "$out"
rm -rf "$site"
"$python" -m pip install --quiet --no-index --no-deps --target "$site" .wheelhouse/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/nvidia-smi.txt"
fi
"$python" -m bench.gpu_check --json "$out/gpu_check.json" "$@" 2>&1 | tee "$out/gpu_check.log"
# The machine's CPU too: its instruction sets (VNNI, AMX) and the 8-bit
# network's speed per core there (docs/benchmarks.md, "On an AVX-512 VNNI CPU").
"$python" -m bench.model_runtimes > "$out/model_runtimes.json" 2>&1 || echo "bench.model_runtimes failed: $out/model_runtimes.json"
