#!/usr/bin/env bash
# The search issue's GPU protocol in one call on a lent H100 (see BENCHMARKS.md): full CIFAR-10, data
# and augmentation on the GPU, bf16 retraining, several runs at once on the card; one FLOPs budget in
# the middle of the cifar space; searched x3, random in band x8, MobileNetV2-style x3 (retrain seeds),
# the null derivation, and 12 networks over the range for Kendall tau. benchmarks/search_protocol.py
# writes results.json and table.md under $OUT as each network finishes.
#
# Before the call, here:  mkdir -p .data && cp ../shared/data/cifar10-jpeg.npz .data/ && echo /.data/ >> .git/info/exclude
# and carry ".data" and ".whl" (fvcore and its needs, see benchmarks/gpu_check.sh).
# Dry run here at a tiny size:  TINY=1 bash benchmarks/gpu_search_protocol.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/hwnas-gpu-protocol}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import fvcore" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/hwnas-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/hwnas-site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
if [ "${TINY:-0}" = 1 ]; then
    ARGS=(--space tiny --data synthetic:n=600,size=24 --limit 600 --search-epochs 2 --retrain-epochs 1 --random 3
          --tau-archs 4 --torch-device cpu --jobs 2)
else
    ARGS=(--space cifar --data .data/cifar10-jpeg.npz --limit 50000 --search-epochs 6 --retrain-epochs 8 --random 8
          --tau-archs 12 --torch-device cuda --bf16 --jobs 8)
fi
nvidia-smi -L 2>/dev/null || true
timeout 470 python3 benchmarks/search_protocol.py "${ARGS[@]}" --cost flops --device "" --search-seeds 0 1 2 \
    --retrain-seeds 0 1 2 --workdir "$OUT/protocol" 2>&1 | tee "$OUT/log.txt" | grep -vE "Warning|warn" | tail -30
