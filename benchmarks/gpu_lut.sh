#!/usr/bin/env bash
# One prepared GPU check for latency tables on a CUDA device (the latency-table issue's CUDA part).
#
# Profiles nb201 and mbconv (224 px) with ONNX Runtime's CUDA provider, checks each table on
# held-out networks measured end to end, and prints the figures (benchmarks/lut_accuracy.py).
# Needs: a CUDA GPU, onnxruntime-gpu (the CUDA execution provider), torch, onnx, numpy.
# hwnas itself runs from the checkout (PYTHONPATH), so nothing else needs installing.
#
#   bash benchmarks/gpu_lut.sh            # results and tables under ${OUT:-/tmp/hwnas-gpu}
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/hwnas-gpu}"
mkdir -p "$out/tables"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 - <<'PY'
import sys
import onnxruntime as ort
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
if "CUDAExecutionProvider" not in providers:
    sys.exit("no CUDAExecutionProvider: install onnxruntime-gpu (the CPU-only onnxruntime cannot time a GPU)")
PY
python3 benchmarks/lut_accuracy.py --device cuda --tables "$out/tables" --check 60 2>&1 | tee "$out/lut_accuracy_cuda.txt"
