"""Patch augmentation with MONAI transforms (nnU-Net's set, lighter probabilities for a 2-core CPU).

Spatial (image and target together; the target is resampled with nearest neighbour): mirroring on each axis,
rotation up to 15 degrees and scaling 0.85-1.15 about the patch centre, and, rarely, elastic deformation.
Intensity (image only, each channel on its own): gamma, Gaussian noise, Gaussian blur, scale and shift.
On request, thick slices (``RandThickSlicesd``): a channel re-sliced 2-7 mm thick along one axis and interpolated
back, as a hospital's 5 mm T2 looks after ``--preprocess``.
Draws come from the training RNG, so a resumed run repeats them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resize,
    Zoom,
)

KEYS = ("image", "target")


class RandThickSlicesd(MapTransform, RandomizableTransform):
    """Each channel of ``keys``, with probability ``prob``, averaged into slices ``thickness_mm`` thick (voxels of
    1 mm) along a random axis (MONAI ``Zoom``, area mode) and resampled back to its grid (``Resize``, trilinear):
    what a thick-slice sequence becomes once registered and resampled to 1 mm. Channels are drawn independently,
    as a hospital's sequences each have their own slices."""

    def __init__(self, keys: str, prob: float, thickness_mm: tuple[float, float] = (2.0, 7.0)) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.thickness_mm = thickness_mm

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        for key in self.keys:
            out[key] = torch.stack([self._maybe_thicken(torch.as_tensor(c)) for c in torch.as_tensor(data[key])])
        return out

    def _maybe_thicken(self, channel: torch.Tensor) -> torch.Tensor:
        """``channel`` (x, y, z), re-sliced thick with probability ``prob``."""
        if self.R.random() >= self.prob:
            return channel
        zoom = [1.0, 1.0, 1.0]
        zoom[self.R.randint(3)] = 1.0 / self.R.uniform(*self.thickness_mm)
        thick = Zoom(zoom, mode="area", keep_size=False)(channel[None])
        return torch.as_tensor(Resize(channel.shape, mode="trilinear")(thick))[0]


def make_augmentation(thick_slices: float = 0.0, paired: bool = False) -> Compose:
    """The MONAI pipeline applied to every training patch (dict with "image" (4, s, s, s), "target" (3, s, s, s));
    ``thick_slices`` > 0 adds ``RandThickSlicesd`` with that chance per channel (before the affine, so the slices
    end up oblique as in a tilted scan). ``paired`` keeps that step even at chance 0: it draws from its own RNG
    only, so two paired pipelines given one seed augment a patch alike but for its thick slices."""
    angle = math.radians(15)
    thick = [RandThickSlicesd("image", thick_slices)] if thick_slices > 0 or paired else []
    return Compose([
        *(RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in range(3)),
        *thick,
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


def augment(transform: Compose, image: np.ndarray, target: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``target`` through ``transform``, its random state set from ``seed``; float32, contiguous."""
    transform.set_random_state(seed=seed)
    out = transform({"image": image, "target": target})
    return (np.ascontiguousarray(np.asarray(out["image"]), dtype=np.float32),
            np.ascontiguousarray(np.asarray(out["target"]), dtype=np.float32))
