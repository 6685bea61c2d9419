"""Patch augmentation with MONAI transforms (nnU-Net's set, lighter probabilities for a 2-core CPU).

Spatial (image and target together; the target is resampled with nearest neighbour): mirroring on each axis,
rotation up to 15 degrees and scaling 0.85-1.15 about the patch centre, and, rarely, elastic deformation.
Intensity (image only, each channel on its own): gamma, Gaussian noise, Gaussian blur, scale and shift.
Draws come from the training RNG, so a resumed run repeats them.
"""

from __future__ import annotations

import math

import numpy as np
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

KEYS = ("image", "target")


def make_augmentation() -> Compose:
    """The MONAI pipeline applied to every training patch (dict with "image" (4, s, s, s), "target" (3, s, s, s))."""
    angle = math.radians(15)
    return Compose([
        *(RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in range(3)),
        RandAffined(KEYS, prob=0.2, rotate_range=(angle,) * 3, scale_range=(0.15,) * 3, mode=("bilinear", "nearest"),
                    padding_mode="zeros"),
        Rand3DElasticd(KEYS, sigma_range=(9, 13), magnitude_range=(0, 200), prob=0.05,
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5)),
        RandGaussianNoised("image", prob=0.15, std=0.1),
        RandGaussianSmoothd("image", prob=0.1, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        RandScaleIntensityd("image", factors=0.1, prob=1.0, channel_wise=True),
        RandShiftIntensityd("image", offsets=0.1, prob=1.0, channel_wise=True),
    ])


def augment(transform: Compose, image: np.ndarray, target: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``target`` through ``transform``, its random state drawn from ``rng``; float32, contiguous."""
    transform.set_random_state(seed=int(rng.integers(2**31)))
    out = transform({"image": image, "target": target})
    return (np.ascontiguousarray(np.asarray(out["image"]), dtype=np.float32),
            np.ascontiguousarray(np.asarray(out["target"]), dtype=np.float32))
