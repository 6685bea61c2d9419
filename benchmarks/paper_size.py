"""Seconds per case of the paper-size ensemble (``PRESETS[...]["paper"]``, 128^3 windows), per device and backend.

The networks are randomly initialised (no paper-size weights are bundled): their speed does not depend on the
weights. For each network it times ``--windows`` forward passes of ``--batch`` windows (after one warm-up), and
multiplies the time per window by the number of 0.6-overlap windows of the real case BraTS-GLI-00001-000's
prepared grid (read from the case when present, else 148 x 198 x 145, its size). So it is an estimate from a few
windows, not a full run: blending and the other stages are left out (they are under 10 % of a compact run).

    python benchmarks/paper_size.py --device cpu --backend torch --backend onnxruntime
    python benchmarks/paper_size.py --device cuda --batch 4          # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from htcnns.inference.onnx_backend import OnnxNetwork, export_onnx
from htcnns.inference.predict import OVERLAP_FRACTION, fast_inference_settings, gpu_autocast
from htcnns.networks import PRESETS, build_network

PREPARED_SHAPE = (148, 198, 145)  # BraTS-GLI-00001-000 after preprocessing (cropped to the brain)


def window_count(shape: tuple[int, ...], roi: tuple[int, int, int]) -> int:
    """Sliding windows MONAI runs over ``shape`` at ``roi`` with the project's overlap."""
    padded = [max(s, r) for s, r in zip(shape, roi, strict=True)]
    interval = _get_scan_interval(padded, roi, 3, (OVERLAP_FRACTION,) * 3)
    return len(dense_patch_slices(padded, roi, interval))


def predictor(architecture: str, device: torch.device, backend: str, scratch: Path) -> tuple[object, int]:
    """The paper-size network as a callable for ``backend``, and its window edge."""
    config = dict(PRESETS[architecture]["paper"])
    roi = config.get("roi_size", 128)
    network = build_network(architecture, config).eval()
    if backend == "onnxruntime":
        path = scratch / f"{architecture}.onnx"
        export_onnx(network, (roi,) * 3, path)
        return OnnxNetwork(path, (roi,) * 3, device), roi
    return network.to(device), roi


def seconds_per_window(run: object, roi: int, device: torch.device, batch: int, passes: int) -> float:
    """Mean seconds per window over ``passes`` timed forward passes (after one warm-up)."""
    windows = torch.randn(batch, 4, roi, roi, roi, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), gpu_autocast(device):
        run(windows)
        sync()
        start = time.perf_counter()
        for _ in range(passes):
            run(windows)
        sync()
    return (time.perf_counter() - start) / (passes * batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", action="append", choices=["torch", "onnxruntime"], default=None)
    parser.add_argument("--batch", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--windows", type=int, default=1, help="timed forward passes per network")
    args = parser.parse_args(argv)
    fast_inference_settings()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        for backend in args.backend or ["torch"]:
            total = 0.0
            for architecture in ("unet", "transbts", "axial_unet"):
                run, roi = predictor(architecture, device, backend, Path(scratch))
                per_window = seconds_per_window(run, roi, device, args.batch, args.windows)
                count = window_count(PREPARED_SHAPE, (roi,) * 3)
                total += per_window * count
                print(f"{device.type} {backend:<11} {architecture:<10} {per_window:7.3f} s/window x {count} windows "
                      f"= {per_window * count:7.1f} s", flush=True)
            print(f"{device.type} {backend:<11} paper-size ensemble: about {total:.1f} s per case (networks only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
