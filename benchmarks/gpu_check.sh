#!/usr/bin/env bash
# One call on a lent GPU machine (see BENCHMARKS.md, "GPU"): the tests that skip without a
# GPU, a torch-cuda profile of the cifar space with its end-to-end validation, and the throughput
# of the DMaskingNAS search and of child training on the GPU. Writes logs and files under $OUT.
#
#   bash benchmarks/gpu_check.sh                     # on the GPU machine (DEVICE=torch-cuda:0)
#   DEVICE=torch-cpu:threads=1 TORCH_DEVICE=cpu N=600 EPOCHS=2 bash benchmarks/gpu_check.sh   # a dry run here
#
# Missing pure-Python packages (fvcore and its needs) travel as wheels in .whl/ (see the device
# tool's README); the machine's own torch, onnx and onnxruntime are used.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/hwnas-gpu-check}
DEVICE=${DEVICE:-torch-cuda:0}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
N=${N:-20000}
EPOCHS=${EPOCHS:-3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import fvcore" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/hwnas-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/hwnas-site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export HWNAS_CACHE=/tmp/hwnas-cache PYTHONUNBUFFERED=1
step() { echo "== $1 ($(date +%H:%M:%S))"; }

step "machine"
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'onnxruntime', onnxruntime.__version__)"

step "tests that need a GPU"
python3 -m pytest -q -p no:cacheprovider -k "cuda" tests/test_devices.py tests/test_search.py 2>&1 | tail -4

step "profile cifar on $DEVICE"
python3 -m hwnas profile --space cifar --device "$DEVICE" --out "$OUT/cifar.lut" --rounds 3 --min-time-ms 50 \
    --no-progress 2>&1 | tail -3
python3 -m hwnas lut show "$OUT/cifar.lut" --top 5 > "$OUT/lut-show.txt" 2>&1; head -4 "$OUT/lut-show.txt"

step "validate the LUT against 40 whole networks on $DEVICE"
python3 -m hwnas lut validate "$OUT/cifar.lut" --space cifar --device "$DEVICE" --samples 40 --fit \
    --min-time-ms 50 --out "$OUT/validation" --no-progress 2>&1 | grep -E "RMSPE|within|Kendall|calibration \(" | head -8

step "search throughput: cifar supernet, synthetic data n=$N, $EPOCHS epochs on $TORCH_DEVICE"
rm -rf /tmp/hwnas-run
python3 -m hwnas search --space cifar --budget-mflops 10 --data "synthetic:n=$N" --epochs "$EPOCHS" \
    --warmup-epochs 1 --torch-device "$TORCH_DEVICE" --out /tmp/hwnas-run --no-progress 2>&1 | tail -4
cp /tmp/hwnas-run/metrics.csv /tmp/hwnas-run/search.json "$OUT/" 2>/dev/null
python3 - "$OUT" <<'EOF'
import json, sys
import pandas as pd
out = sys.argv[1]
m, s = pd.read_csv(f"{out}/metrics.csv"), json.load(open(f"{out}/search.json"))
print("epoch seconds:", [round(x, 1) for x in m["seconds"]])
t = s["compute_time"]
print(f"weight step {t['weight_step_ms']:.1f} ms, arch step {t['arch_step_ms']:.1f} ms")
EOF

step "train the derived child on $TORCH_DEVICE"
python3 -m hwnas train --arch /tmp/hwnas-run/arch.json --data "synthetic:n=$N" --epochs 2 \
    --torch-device "$TORCH_DEVICE" --out /tmp/hwnas-child.safetensors --no-progress 2>&1 | tail -2
step "done"
