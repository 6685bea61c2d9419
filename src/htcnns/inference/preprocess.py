"""Reorient to RAS+, crop to the brain and z-score each modality; and the exact inverse for label maps.

Order (undone in reverse by ``restore_input_grid``): reorient (nibabel orientations) -> crop -> normalise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations

from htcnns.inference.validate import LoadedCase

CROP_MARGIN_VOXELS = 4
"""Voxels kept around the non-zero brain box on every side (clipped at the image border)."""


@dataclass(frozen=True)
class Prepared:
    """The network input of one case, and what is needed to put a prediction back on the input grid.

    image: float32 (4, x, y, z), RAS+ canonical, cropped; each modality z-scored over brain voxels, 0 outside.
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
    """Reorient, crop to the brain (plus CROP_MARGIN_VOXELS) and z-score each modality over the brain."""
    orientation = orientations.io_orientation(case.affine)
    # channels last for nibabel, which flips and transposes the first three axes: views, no copy of the case
    image = np.moveaxis(orientations.apply_orientation(np.moveaxis(case.image, 0, -1), orientation), -1, 0)
    brain = (image != 0).any(axis=0)
    crop = brain_box(brain, CROP_MARGIN_VOXELS)
    cropped, brain_cropped = image[(slice(None), *crop)], brain[crop]
    return Prepared(
        case_id=case.case_id,
        image=zscore(cropped, brain_cropped),
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


def zscore(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Z-score each channel of ``image`` (C, x, y, z) over ``brain`` voxels; 0 outside the brain.

    A channel that is constant over the brain becomes 0 there (no division by zero).
    """
    result = np.zeros_like(image, dtype=np.float32)
    for channel, values in enumerate(image):
        inside = values[brain]
        std = float(inside.std()) if inside.size else 0.0
        scale = 1.0 / std if std > 1e-8 else 0.0
        result[channel][brain] = (inside - inside.mean()) * scale
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
