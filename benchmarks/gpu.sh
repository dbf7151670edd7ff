#!/usr/bin/env bash
# The prepared GPU run (issue 17): a CUDA GPU measured through PyTorch (the torch device kind), in <= 8 minutes on an H200.
#
# Prints: the environment (GPU, driver, CUDA, torch, onnxruntime, and which runtime --device cuda picks);
# live latency of 50 random NB201 networks at batch 1 and 256 with Kendall tau against the shipped
# titan_rtx_1, 2080ti_1 and titan_rtx_256 tables; the NB201 lookup table's build and --check 100 at
# batch 1 and 256; an mbconv table (224 px) checked on 30 networks; a 100-trial search with --device cuda;
# 2 epochs of supernet training on the GPU (--train-device cuda). Each step runs under its own time
# limit (they add up to 8 minutes) and says how long it took; the whole log goes to $RESULTS/gpu.log.
#
# The GPU machine has PyTorch with CUDA, onnx, onnxscript and the CPU onnxruntime, but not optuna or
# fvcore: carry their wheels (Python 3.12, x86-64; see /work/.library/device/README.md), once, here:
#
#   mkdir -p .whl && python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 colorlog==6.12.0 Mako==1.4.3 yacs==0.1.8 termcolor==3.3.0
#   python -m pip wheel --no-deps --no-build-isolation -w .whl fvcore==0.1.5.post20221221 iopath==0.1.10   # sdists only
#
# (.whl/ is git-ignored; 5.5 MB.) Then, through the device tool: run(command="bash benchmarks/gpu.sh",
# carry=[".whl"], timeout_s=540). The wheels are installed with --no-deps into /tmp/hwnas-site, and
# hwnas itself with --no-deps (from the checkout on PYTHONPATH where pip cannot build it there).
#
# Dry run on a CPU (tiny sizes, every step, 10-15 minutes on 2 busy cores): DEVICE=cpu bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
RESULTS="${OUT:-/tmp/hwnas-gpu}"   # $OUT on the device machine: what is written there comes back
WORK="$(mktemp -d /tmp/hwnas-gpu-work.XXXXXX)"
PY="${PYTHON:-python3}"
mkdir -p "$RESULTS" "$WORK/devices" "$WORK/tables"
exec > >(tee "$RESULTS/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 HWNAS_DEVICES="$WORK/devices"

if [ "$DEVICE" = cuda ]; then
  CELLS=50 BATCH_LO=1 BATCH_HI=256 CELL_WARMUP=20 CELL_REPEATS=100
  LUT_WARMUP=5 LUT_REPEATS=20 NB_CALIBRATE=100 NB_CHECK=100 MB_CALIBRATE=80 MB_CHECK=30 TRIALS=100 SUPERNET_TRIALS=10
  SEARCH_DEVICE=cuda   # the choice this issue adds: onnxruntime-gpu where installed, else PyTorch on the GPU
  T_ENV=20 T_CELLS=60 T_NB_LO=90 T_NB_HI=120 T_MB=70 T_SEARCH=50 T_SUPERNET=60   # seconds: 470 in all
else
  CELLS=5 BATCH_LO=1 BATCH_HI=8 CELL_WARMUP=1 CELL_REPEATS=3
  LUT_WARMUP=1 LUT_REPEATS=3 NB_CALIBRATE=10 NB_CHECK=5 MB_CALIBRATE=8 MB_CHECK=3 TRIALS=10 SUPERNET_TRIALS=3
  SEARCH_DEVICE=torch_lo
  T_ENV=60 T_CELLS=120 T_NB_LO=300 T_NB_HI=300 T_MB=300 T_SEARCH=180 T_SUPERNET=600   # 2 busy cores: 2-5 min of supernet
fi
for b in lo hi; do
  batch=$([ $b = lo ] && echo "$BATCH_LO" || echo "$BATCH_HI")
  printf 'name = "torch_%s"\nkind = "torch"\ndescription = "%s through PyTorch, batch %s (gpu.sh)"\ndevice = "%s"\nbatch = %s\nprecision = "fp32"\ncompile = "none"\nthreads = 1\nwarmup = %s\nrepeats = %s\n' \
    "$b" "$DEVICE" "$batch" "$DEVICE" "$batch" "$LUT_WARMUP" "$LUT_REPEATS" >"$WORK/devices/torch_$b.toml"
done

T0=$(date +%s)
step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, say how long it took
  local name="$1" limit="$2"; shift 2
  local t=$(date +%s)
  echo; echo "=== $name (limit ${limit} s; $(( t - T0 )) s into the run; load $(cut -d' ' -f1-3 /proc/loadavg))"
  timeout --kill-after=5 "$limit" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "!!! $name: stopped at its ${limit} s limit"
  echo "=== $name: exit $rc, $(( $(date +%s) - t )) s"
}

echo "=== setup: hwnas and the carried wheels ($DEVICE run, results in $RESULTS)"
if ! "$PY" -c "import optuna, fvcore" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hwnas-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/hwnas-site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "optuna or fvcore is missing and no .whl folder was carried: see this script's header"; exit 1
  fi
fi
if ! "$PY" -c "import hwnas, hwnas_agent" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e ./agent -e . >/dev/null 2>&1 \
    || export PYTHONPATH="$PWD:$PWD/agent${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import hwnas, optuna, fvcore; print('hwnas from', hwnas.__file__, '| optuna', optuna.__version__)" || exit 1

step "1. environment" "$T_ENV" bash -c '
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.sm,temperature.gpu,power.draw --format=csv 2>/dev/null \
    || echo "nvidia-smi: not here"
  echo "cpu: $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  "$0" - <<"PY"
import platform
import onnxruntime, torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"torch sees CUDA: {torch.cuda.is_available()}")
print(f"onnxruntime {onnxruntime.__version__}: {onnxruntime.get_available_providers()}")
from hwnas.cost.torch_runtime import gpu_clocks, gpu_identity
print("GPU:", gpu_identity() if torch.cuda.is_available() else None, "| clocks now:", gpu_clocks())
from hwnas.device import get_device, runnable
from hwnas.cost.source import device_kind
d = runnable(get_device("cuda"), lambda line: print("--device cuda ->", line))
try:
    device_kind(d.kind).preflight(d)
    print(f"--device cuda measures with device {d.name} (kind {d.kind}, {d.provider})")
except Exception as exc:
    print(f"--device cuda is refused here: {exc}")
PY
  "$0" -m hwnas devices | grep -E "^(device|cpu|cuda|torch_)"
' "$PY"

step "2. live latency of $CELLS random NB201 networks, batch $BATCH_LO and $BATCH_HI; Kendall tau against shipped GPU tables" "$T_CELLS" \
  "$PY" benchmarks/gpu_cells.py --device "$DEVICE" --cells "$CELLS" --batch "$BATCH_LO" "$BATCH_HI" \
  --warmup "$CELL_WARMUP" --repeats "$CELL_REPEATS" --out "$RESULTS/cells.json"
BUDGET_MS=$("$PY" -c "import json; print(round(json.load(open('$RESULTS/cells.json'))['budget_ms'], 4))" 2>/dev/null || echo 5)

for b in lo hi; do
  limit=$([ $b = lo ] && echo "$T_NB_LO" || echo "$T_NB_HI")
  step "3$b. NB201 lookup table through PyTorch (device torch_$b), --check $NB_CHECK" "$limit" \
    "$PY" -m hwnas profile --device "torch_$b" --space nb201 --calibrate "$NB_CALIBRATE" --check "$NB_CHECK" --force \
    --out "$WORK/tables/torch_$b-nb201.json"
done

step "4. mbconv lookup table (224 px, device torch_lo), --check $MB_CHECK" "$T_MB" \
  "$PY" -m hwnas profile --device torch_lo --space mbconv --resolution 224 --calibrate "$MB_CALIBRATE" --check "$MB_CHECK" --force \
  --out "$WORK/tables/torch_lo-mbconv.json"

# The table of step 3lo (predictions; the front and a reference network re-measured live), or live measurement without it.
TABLE_LO="$WORK/tables/torch_lo-nb201.json"
if [ -f "$TABLE_LO" ]; then LATENCY_FROM=(--table "$TABLE_LO" --allow-failing-table); else LATENCY_FROM=(--latency-source measure); fi
step "5. $TRIALS-trial search, --device $SEARCH_DEVICE under ${BUDGET_MS} ms, latency ${LATENCY_FROM[*]}" "$T_SEARCH" \
  "$PY" -m hwnas search --device "$SEARCH_DEVICE" --space nb201 --latency "${BUDGET_MS}ms" --trials "$TRIALS" "${LATENCY_FROM[@]}" \
  --no-export --out "$WORK/search" -q

step "6. supernet: 2 epochs on digits, --train-device $DEVICE, $SUPERNET_TRIALS trials measured live on torch_lo" "$T_SUPERNET" \
  "$PY" -m hwnas search --space mbconv --evaluator supernet --data digits --epochs 2 --train-device "$DEVICE" \
  --device torch_lo --latency-source measure --latency 1000ms --trials "$SUPERNET_TRIALS" --no-export --out "$WORK/supernet" -q

for f in search supernet; do [ -f "$WORK/$f/report.json" ] && cp "$WORK/$f/report.json" "$RESULTS/$f-report.json"; done
echo; echo "=== done in $(( $(date +%s) - T0 )) s (limit 480 s on an H200); log $RESULTS/gpu.log; work folder $WORK"
