#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: train on it, embed on it with torch and ONNX Runtime, and
# print images/s and the parity (min cosine per image) with the CPU.
#
# Usage: bench/gpu_check.sh DATA_DIR [WORK_DIR]
#   DATA_DIR: an image folder, one sub-folder per class (e.g. the grocery store set).
#   Needs: es-metric installed with a CUDA build of torch (pip's default on Linux x86-64) and,
#   for the ONNX Runtime row, `pip install onnxruntime-gpu` (instead of onnxruntime).
# Exit status: 0 when every row on the GPU is within cosine 0.9999 of the CPU, 1 otherwise.
set -euo pipefail
DATA=${1:?usage: bench/gpu_check.sh DATA_DIR [WORK_DIR]}
WORK=${2:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)

nvidia-smi -L
python -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda,
"GPUs", torch.cuda.device_count()); sys.exit(0 if torch.cuda.is_available() else "torch sees no GPU")'

echo "== training on the GPU (ESM_DEVICE=cuda)"
start=$(date +%s)
ESM_DEVICE=cuda esm train "$DATA" --out "$WORK/gpu.pt" --epochs 5 --export
echo "trained in $(( $(date +%s) - start )) s"

echo "== embedding: images/s and parity with the CPU"
python "$HERE/gpu_parity.py" "$WORK/gpu.pt" "$DATA"
