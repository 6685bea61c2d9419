"""The ONNX Runtime backend: ONNX files made from the verified safetensors, checked like them, run per window.

``export_onnx`` writes ``network.onnx`` beside the weights (``htcnns export --onnx``): the torch network traced by
``torch.onnx.export(dynamo=True)`` at the manifest's window size, batch axis dynamic. The manifest lists the file
with its sha256, its window and the sha256 of the weights it was made from, so it can never drift from them.
``htcnns.weights`` verifies all three before ``OnnxNetwork`` builds a session; it maps (N, 4, *roi) tensors to
logits like the torch network does (MONAI's sliding window calls it per batch of windows).

Why the two backends differ by up to ~1e-3 of the logit range: torch's channels-last GroupNorm (our instance
norm) computes its statistics in float32 over the whole window, a relative error of ~4e-4 against float64; ONNX
Runtime's InstanceNormalization is within ~2e-5 of float64 (measured in ``docs/speed.md``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ONNX_NAME = "network.onnx"
OPSET = 18


@dataclass(frozen=True)
class OnnxFile:
    """The ONNX file of a model folder, as its manifest lists it."""

    file: str
    sha256: str
    roi_size: tuple[int, int, int]
    weights_sha256: str


EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Hide the exporter's per-node INFO lines and warnings (the export either works or raises)."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(network: torch.nn.Module, roi_size: tuple[int, int, int], path: Path) -> None:
    """Trace ``network`` (eval mode, CPU) at windows of ``roi_size`` with a dynamic batch axis into ``path``."""
    network = network.cpu().eval()
    example = torch.zeros(2, 4, *roi_size)
    batch = torch.export.Dim("batch", min=1, max=256)
    with quiet_exporter():
        program = torch.onnx.export(network, (example,), input_names=["image"], output_names=["logits"],
                                    dynamo=True, dynamic_shapes=({0: batch},), opset_version=OPSET, optimize=True,
                                    verbose=False)
        program.save(str(path))


def providers(device: torch.device) -> list[str]:
    """ONNX Runtime providers for ``device``: TensorRT and CUDA first on a GPU when installed, else the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.type == "cuda" else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OnnxNetwork:
    """An ONNX file (verified by the caller) as a callable on (N, 4, *roi) float tensors, returning logits on the
    input's device."""

    def __init__(self, path: Path, roi_size: tuple[int, int, int], device: torch.device,
                 threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers(device))
        self.roi_size = roi_size

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits (N, 3, *roi) of (N, 4, *roi) windows."""
        if tuple(windows.shape[2:]) != self.roi_size:
            raise ValueError(f"this ONNX file takes windows of {self.roi_size}, got {tuple(windows.shape[2:])}")
        array = np.ascontiguousarray(windows.detach().float().cpu().numpy())
        logits = self.session.run(["logits"], {"image": array})[0]
        return torch.from_numpy(logits).to(windows.device)
