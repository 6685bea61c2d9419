"""Sliding-window prediction of one network with MONAI (overlap 0.6, Gaussian blending).

The batch axis exists only here: ``image`` tensors are (1, 4, x, y, z). On CUDA the networks run under bfloat16
autocast (float16 where the GPU has no bfloat16) while MONAI blends the windows in float32, and as many windows go
into one forward pass as free GPU memory allows (``windows_per_pass``). ``fast_inference_settings`` flushes denormal
floats to zero (the bundled TransBTS computes attention scores of ~1e-44, and denormal arithmetic made its windows
several times slower on the CPU) and sends attention through ``scaled_dot_product_attention`` (flash attention)
instead of torch's inference fast path, which forms the whole token-by-token score matrix.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from htcnns.errors import SettingsError
from htcnns.weights import LoadedModel

OVERLAP_FRACTION = 0.6
MAX_WINDOWS_PER_PASS = 16
_WINDOW_PEAK_BYTES: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()
"""GPU memory one window of a model takes (``windows_per_pass``), keyed by the model's network."""
CPU_WINDOWS_PER_PASS = 2
"""Windows per forward pass on the CPU: two were ~1.2x faster per window than one for the U-Net (docs/speed.md)."""
MIRROR_AXES = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
"""Test-time mirroring (``predict(mirror=True)``): the image as it is and flipped along every combination of its
three spatial axes of the (1, C, x, y, z) tensor, as nnU-Net does; the networks were trained with all three flips."""


def fast_inference_settings() -> None:
    """Flush denormal floats to zero, and run attention as ``scaled_dot_product_attention`` (module docstring).

    The flush reaches torch's CPU worker threads only when set before torch starts them (the CLI calls this first
    thing); a later call still covers the calling thread. Both settings are process-wide.
    """
    torch.set_flush_denormal(True)
    torch.backends.mha.set_fastpath_enabled(False)
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal", category=UserWarning)


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


def windows_that_fit(free_bytes: int, bytes_per_window: int, cap: int = MAX_WINDOWS_PER_PASS) -> int:
    """How many windows one forward pass may take: half the free memory over one window's peak, 1 to ``cap``."""
    return max(1, min(cap, free_bytes // 2 // max(bytes_per_window, 1)))


def windows_per_pass(image: torch.Tensor, model: LoadedModel) -> int:
    """Windows per forward pass: ``CPU_WINDOWS_PER_PASS`` on the CPU; on CUDA as many as free memory allows,
    measured from the peak memory of one window."""
    if image.device.type != "cuda":
        return CPU_WINDOWS_PER_PASS
    if model.network not in _WINDOW_PEAK_BYTES:  # measured once per loaded model, not per case
        window = torch.zeros(1, image.shape[1], *model.manifest.roi_size, device=image.device)
        torch.cuda.synchronize(image.device)
        before = torch.cuda.memory_allocated(image.device)
        torch.cuda.reset_peak_memory_stats(image.device)
        with torch.inference_mode(), gpu_autocast(image.device):
            model.predictor(window)
        _WINDOW_PEAK_BYTES[model.network] = torch.cuda.max_memory_allocated(image.device) - before
    free, _ = torch.cuda.mem_get_info(image.device)
    return windows_that_fit(free, _WINDOW_PEAK_BYTES[model.network])


def gpu_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on a CUDA GPU that has it (else float16); nothing on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def sliding_window_logits(image: torch.Tensor, model: LoadedModel, *, sw_batch_size: int | None = None,
                          stitch_device: torch.device | str | None = None) -> torch.Tensor:
    """Blended logits (1, 3, x, y, z) of one network over the whole image.

    Windows are the manifest's ROI; a smaller image is padded and the result cropped back (MONAI). The network
    runs with the model's backend (torch or ONNX Runtime), under autocast on CUDA (``gpu_autocast``); blending
    is float32.

    Args:
        sw_batch_size: windows per forward pass; None chooses (``windows_per_pass``).
        stitch_device: where the windows are blended and the result is kept (MONAI's ``device``); None keeps
            the image's device, "cpu" saves GPU memory on large images.
    """
    batch = sw_batch_size or windows_per_pass(image, model)
    with torch.inference_mode(), gpu_autocast(image.device):
        logits = sliding_window_inference(
            image,
            roi_size=model.manifest.roi_size,
            sw_batch_size=batch,
            predictor=model.predictor,
            overlap=OVERLAP_FRACTION,
            mode="gaussian",
            device=stitch_device,
        )
    return logits.float()


def predict(image: torch.Tensor, model: LoadedModel, *, sw_batch_size: int | None = None,
            stitch_device: torch.device | str | None = None, mirror: bool = False) -> RegionProbs:
    """Region probabilities of one network for a prepared image tensor (1, 4, x, y, z); with ``mirror``, the mean
    of the probabilities over the image and its 7 mirror images (``MIRROR_AXES``, each flipped back): 8x the time."""
    flips = MIRROR_AXES if mirror else ((),)
    total = None
    for axes in flips:
        flipped = torch.flip(image, axes) if axes else image  # torch.flip copies even with no axes
        probs = torch.sigmoid(sliding_window_logits(flipped, model, sw_batch_size=sw_batch_size,
                                                    stitch_device=stitch_device))
        probs = torch.flip(probs, axes) if axes else probs
        total = probs if total is None else total.add_(probs)
    return RegionProbs(model.manifest.name, (total[0] / len(flips)).cpu().numpy())
