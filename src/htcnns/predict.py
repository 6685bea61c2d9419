"""Sliding-window prediction of one network with MONAI (overlap 0.6, Gaussian blending).

The batch axis exists only here: ``image`` tensors are (1, 4, x, y, z).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from htcnns.errors import SettingsError
from htcnns.weights import LoadedModel

OVERLAP_FRACTION = 0.6


@dataclass(frozen=True)
class RegionProbs:
    """One network's region probabilities on the prepared (cropped, RAS+) grid.

    probs: float32 (3, x, y, z) in [0, 1], channels WT, TC, ET (independent sigmoids).
    """

    model_name: str
    probs: np.ndarray


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is a SettingsError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"--device {name} was asked for, but no CUDA GPU is visible; use --device cpu.")
    return torch.device(name)


def to_network_input(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """The prepared (4, x, y, z) image as a (1, 4, x, y, z) float32 tensor on ``device``; made once per case."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)


def sliding_window_logits(image: torch.Tensor, model: LoadedModel, *, sw_batch_size: int = 1,
                          stitch_device: torch.device | str | None = None) -> torch.Tensor:
    """Blended logits (1, 3, x, y, z) of one network over the whole image.

    Windows are the manifest's ROI; a smaller image is padded and the result cropped back (MONAI).
    Mixed precision (float16 autocast) is used on CUDA; the CPU runs float32.

    Args:
        stitch_device: where the windows are blended and the result is kept (MONAI's ``device``); None keeps
            the image's device, "cpu" saves GPU memory on large images.
    """
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if image.device.type == "cuda" else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        logits = sliding_window_inference(
            image,
            roi_size=model.manifest.roi_size,
            sw_batch_size=sw_batch_size,
            predictor=model.network,
            overlap=OVERLAP_FRACTION,
            mode="gaussian",
            device=stitch_device,
        )
    return logits.float()


def predict(image: torch.Tensor, model: LoadedModel, *, sw_batch_size: int = 1,
            stitch_device: torch.device | str | None = None) -> RegionProbs:
    """Region probabilities of one network for a prepared image tensor (1, 4, x, y, z)."""
    logits = sliding_window_logits(image, model, sw_batch_size=sw_batch_size, stitch_device=stitch_device)
    probs = torch.sigmoid(logits)[0]
    return RegionProbs(model.manifest.name, probs.cpu().numpy())
