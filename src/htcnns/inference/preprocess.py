"""Reorient to RAS+, crop to the brain and z-score each modality; and the exact inverse for label maps.

Order (undone in reverse by ``restore_input_grid``): reorient (nibabel orientations) -> crop -> normalise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations
from scipy import ndimage

from htcnns.inference.validate import LoadedCase

CROP_MARGIN_VOXELS = 4
"""Voxels kept around the non-zero brain box on every side (clipped at the image border)."""
STATISTICS_EROSION_VOXELS = 10
"""Each modality's mean and standard deviation are taken over the brain eroded by this many voxels: its outer shell
(surface CSF, partial volume) is where two skull strippings of one head differ most, and there it moves the statistics,
hence every input value, up to 4 times as much (docs/native-scans.md, 2026-12-07)."""
STATISTICS_MIN_SHARE = 0.25
"""Where erosion would leave less than this share of the brain (a small volume), the whole brain is used."""
NORMALIZATION = f"zscore-brain-eroded-{STATISTICS_EROSION_VOXELS}"
"""What a model's manifest names as its input normalisation; ``LEGACY_NORMALIZATION`` is the z-score over the whole
brain of models written before 2026-12-07, which this version no longer feeds."""
LEGACY_NORMALIZATION = "zscore-brain"


@dataclass(frozen=True)
class Prepared:
    """The network input of one case, and what is needed to put a prediction back on the input grid.

    image: float32 (4, x, y, z), RAS+ canonical, cropped; each modality z-scored (``zscore``), 0 outside the brain.
    brain: bool (x, y, z), the union of non-zero voxels of the four modalities.
    crop: the box of ``image`` inside the canonical full grid.
    canonical_shape: (X', Y', Z') of the full image after reorientation.
    orientation: nibabel orientation array taking the input's voxel axes to RAS+.
    """

    case_id: str
    image: np.ndarray
    brain: np.ndarray
    crop: tuple[slice, slice, slice]
    canonical_shape: tuple[int, int, int]
    orientation: np.ndarray


def preprocess(case: LoadedCase) -> Prepared:
    """Reorient, crop to the brain (plus CROP_MARGIN_VOXELS) and z-score each modality (``zscore``)."""
    orientation = orientations.io_orientation(case.affine)
    # channels last for nibabel, which flips and transposes the first three axes: views, no copy of the case
    image = np.moveaxis(orientations.apply_orientation(np.moveaxis(case.image, 0, -1), orientation), -1, 0)
    brain = (image != 0).any(axis=0)
    crop = brain_box(brain, CROP_MARGIN_VOXELS)
    cropped, brain_cropped = image[(slice(None), *crop)], brain[crop]
    return Prepared(
        case_id=case.case_id,
        image=zscore(cropped, brain_cropped, statistics_region(brain_cropped)),
        brain=brain_cropped,
        crop=crop,
        canonical_shape=brain.shape,
        orientation=orientation,
    )


def brain_box(brain: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """Bounding box of the True voxels of ``brain`` (X, Y, Z), widened by ``margin`` voxels, as slices."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(brain.any(axis=other))
        start = max(int(present[0]) - margin, 0) if present.size else 0
        stop = min(int(present[-1]) + 1 + margin, brain.shape[axis]) if present.size else brain.shape[axis]
        box.append(slice(start, stop))
    return tuple(box)


def statistics_region(brain: np.ndarray) -> np.ndarray:
    """The brain eroded by ``STATISTICS_EROSION_VOXELS``, or the whole brain where that leaves less than
    ``STATISTICS_MIN_SHARE`` of it."""
    inner = ndimage.binary_erosion(brain, iterations=STATISTICS_EROSION_VOXELS)
    return inner if inner.sum() >= STATISTICS_MIN_SHARE * brain.sum() else brain


def zscore(image: np.ndarray, brain: np.ndarray, statistics: np.ndarray | None = None) -> np.ndarray:
    """Z-score each channel of ``image`` (C, x, y, z) with the mean and standard deviation over ``statistics``
    (default: ``brain``); 0 outside ``brain``.

    A channel that is constant over ``statistics`` becomes 0 in the brain (no division by zero).
    """
    region = brain if statistics is None else statistics
    result = np.zeros_like(image, dtype=np.float32)
    for channel, values in enumerate(image):
        inside = values[region]
        std = float(inside.std()) if inside.size else 0.0
        scale = 1.0 / std if std > 1e-8 else 0.0
        mean = float(inside.mean()) if inside.size else 0.0
        result[channel][brain] = (values[brain] - mean) * scale
    return result


def restore_input_grid(labels: np.ndarray, prepared: Prepared) -> np.ndarray:
    """Put a label map from the cropped canonical grid back onto the input's voxel grid.

    Args:
        labels: uint8 (x, y, z) on ``prepared.image``'s grid.

    Returns:
        uint8 (X, Y, Z) in the input file's voxel order; 0 outside the crop.
    """
    full = np.zeros(prepared.canonical_shape, np.uint8)
    full[prepared.crop] = labels
    back = orientations.ornt_transform(orientations.axcodes2ornt("RAS"), prepared.orientation)
    return np.ascontiguousarray(orientations.apply_orientation(full, back))


def to_prepared_grid(volume: np.ndarray, prepared: Prepared) -> np.ndarray:
    """Bring a (X, Y, Z) array on the input grid (e.g. a reference label map) onto ``prepared.image``'s grid."""
    return orientations.apply_orientation(volume, prepared.orientation)[prepared.crop]
