#!/usr/bin/env bash
# Train the default RGB detector on a CUDA machine with ~16 CPU cores in about 8 minutes.
#
#   bash scripts/gpu_train.sh [MINUTES] [RUN_DIR]        # defaults: 8, runs/gpu-default
#   CONFIG=configs/train-default-stage1.yaml bash scripts/gpu_train.sh 5.2 runs/default-stage1   # stage 1
#
# The default config (stage 2) starts from runs/default-stage1/bundle: train stage 1 first, or copy the shipped
# v1.0.0 bundle there. CONFIG picks another config (default configs/train-default.yaml).
#
# Needs only: python3 with torch (CUDA), numpy, scipy, scikit-image, pillow, imageio, pyyaml, safetensors, pydantic
# (no GDAL: the synthetic training path never imports rasterio/geopandas). Runs from the repository root without
# installing rams (PYTHONPATH). When $OUT names a folder (the device tool sets it), the bundle, logs and config
# are copied there. Ship the result with:  cp -r RUN_DIR/bundle models/default   (then: rams models show default)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEVICE="${DEVICE:-cuda}"
MINUTES="${1:-8}"
RUN_DIR="${2:-runs/gpu-default}"
CONFIG="${CONFIG:-configs/train-default.yaml}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"   # DEVICE=cpu for a local smoke run of this script
WORKERS="${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=1   # sample rendering runs in worker processes; keep each to one thread

"$PY" - <<'PYCHECK'
import importlib, sys
need = ["torch", "numpy", "scipy", "skimage", "PIL", "imageio", "yaml", "safetensors", "pydantic"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (carry them as wheels, see the device README)")
import os, torch
if os.environ.get("DEVICE", "cuda") == "cuda" and not torch.cuda.is_available():
    sys.exit("CUDA is not available to torch on this machine")
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, GPU {gpu}")
PYCHECK
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$(dirname "$RUN_DIR")"
echo "training ${CONFIG} for ${MINUTES} min with ${WORKERS} workers into ${RUN_DIR}"

set +e
"$PY" -m rams.detector.train --config "$CONFIG" --device "$DEVICE" --workers "$WORKERS" \
    --threads 4 --max-minutes "$MINUTES" --out "$RUN_DIR" --overwrite 2>&1 | tee "$RUN_DIR.log"
status=${PIPESTATUS[0]}
set -e

# quick check of the exported bundle: loads with its hash, runs on one tile
"$PY" - "$RUN_DIR/bundle" <<'PYCHECK' || status=1
import sys, numpy as np
from rams.detector.bundle import load_bundle
from rams.detector.predict import Predictor
b = load_bundle(sys.argv[1])
d = Predictor(b, device="cpu", threads=2).predict(np.zeros((1, 3, 512, 512), np.float32), None, None)
print(f"bundle {b.card.name} {b.card.version} ok: sha256 {b.card.weights_sha256[:12]}, "
      f"operating points {b.card.operating_points}, {len(d[0])} detections on a blank tile")
PYCHECK

if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
    mkdir -p "$OUT/bundle"
    cp "$RUN_DIR/bundle/model.json" "$RUN_DIR/bundle/weights.safetensors" "$OUT/bundle/" 2>/dev/null || true
    cp "$RUN_DIR/log.csv" "$RUN_DIR/steps.csv" "$RUN_DIR/config.yaml" "$RUN_DIR.log" "$OUT/" 2>/dev/null || true
    echo "copied bundle and logs to $OUT"
fi
exit "$status"
