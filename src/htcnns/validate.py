"""Check that a case's four volumes form one valid 3-D multi-modal image, and stack them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from htcnns.errors import InputError
from htcnns.io import Volume
from htcnns.labels import MODALITIES

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference allowed between two modalities' affines (mm, and unitless for rotations)."""


@dataclass(frozen=True)
class LoadedCase:
    """One case on its original grid.

    image: float32 (4, X, Y, Z); channels in MODALITIES order (t1n, t1c, t2w, t2f); file voxel order.
    reference: the t1c image, whose affine and header geometry the output label map copies.
    """

    case_id: str
    image: np.ndarray
    reference: nib.Nifti1Image

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world matrix of the input grid, in mm."""
        return self.reference.affine


def validate_case(case_id: str, volumes: Mapping[str, Volume]) -> LoadedCase:
    """Check the four volumes and stack them into one (4, X, Y, Z) image.

    Args:
        case_id: used in every error message.
        volumes: modality -> Volume, all four MODALITIES.

    Raises:
        InputError: a volume is not 3-D, the shapes or affines differ, values are NaN/Inf, or a volume is
            all zero; the message names the case, the file and what to do.
    """
    reference = volumes["t1c"]
    for modality in MODALITIES:
        _check_volume(case_id, volumes[modality], reference)
    image = np.stack([volumes[modality].data for modality in MODALITIES])
    return LoadedCase(case_id, image, reference.image)


def _check_volume(case_id: str, volume: Volume, reference: Volume) -> None:
    name, data = volume.path.name, volume.data
    if data.ndim != 3:
        raise InputError(
            f"{case_id}: {name} has shape {data.shape}, but each modality must be one 3-D volume; "
            "split 4-D series or stack 2-D slices into a 3-D NIfTI first."
        )
    if data.shape != reference.data.shape:
        raise InputError(
            f"{case_id}: {name} is {data.shape} voxels but {reference.path.name} is {reference.data.shape}; "
            "all four modalities must share one grid. Co-register them to t1c (e.g. BraTS preprocessing)."
        )
    if not np.allclose(volume.affine, reference.affine, atol=AFFINE_TOLERANCE_MM):
        raise InputError(
            f"{case_id}: the affine of {name} differs from that of {reference.path.name} "
            f"(largest difference {np.abs(volume.affine - reference.affine).max():.4g}); all four modalities "
            "must share one grid. Co-register them to t1c (e.g. BraTS preprocessing)."
        )
    if not np.isfinite(data).all():
        raise InputError(f"{case_id}: {name} contains NaN or infinite values; fix or re-export the image.")
    if not data.any():
        raise InputError(f"{case_id}: {name} is all zero; the image holds no brain to segment.")
