#!/bin/bash
# GPU check, for a lent GPU machine (one run, under 8 minutes): the GPU tests, the real case segmented with both
# backends (per-stage seconds and peak GPU memory from the report), and the paper-size ensemble's seconds per case.
#   bash benchmarks/gpu_check.sh            # from the repository root, after `make .venv/.installed`
# On a CUDA machine install onnxruntime-gpu in place of onnxruntime for the ONNX Runtime CUDA/TensorRT providers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CASE=${CASE:-../shared/data/brats2023-gli-00001-000}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
timeout 180 $PY -m pytest -q tests/test_gpu.py tests/test_predict.py tests/test_onnx_backend.py -x
mkdir -p "$scratch/in/case"
cp "$CASE"/BraTS-GLI-00001-000-t*.nii.gz "$scratch/in/case/"
for backend in torch onnxruntime; do
  timeout 120 $PY - "$scratch" "$backend" <<'PYEOF'
import json, sys, time, torch
from pathlib import Path
from htcnns.api import Segmenter
scratch, backend = Path(sys.argv[1]), sys.argv[2]
segmenter = Segmenter(device="cuda", backend=backend)
for attempt in ("warm-up", "timed"):
    torch.cuda.reset_peak_memory_stats()
    results, report = segmenter.segment_folder(scratch / "in", scratch / f"out-{backend}", overwrite=True, write_report=False)
case = report.to_json()["cases"][0]
print(f"{backend}: {case['seconds']:.2f} s per case on {case['device']}; peak GPU memory "
      f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB; stages {json.dumps(case['stages'])}")
PYEOF
done
timeout 240 $PY benchmarks/paper_size.py --device cuda --batch 4 --windows 3 --backend torch
