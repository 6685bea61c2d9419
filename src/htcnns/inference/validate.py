"""Check that a case's four volumes form one valid 3-D multi-modal image, and stack them; check earlier outputs."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from htcnns.errors import InputError
from htcnns.inference.io import Volume, error_reason
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
    warnings: tuple[str, ...] = ()

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
        InputError: a volume is not 3-D, an affine is singular, the shapes or affines differ, values are
            NaN/Inf, or a volume holds one value everywhere (e.g. all zero); the message names the case, the
            file and what to do.
    """
    reference = volumes["t1c"]
    _check_affine(case_id, reference)
    for modality in MODALITIES:
        _check_volume(case_id, volumes[modality], reference)
    image = np.stack([volumes[modality].data for modality in MODALITIES])
    return LoadedCase(case_id, image, reference.image, brats_space_warnings(case_id, reference))


BRATS_FIELD_OF_VIEW_MM = (240.0, 240.0, 155.0)
PREPARE_ADVICE = ("the networks expect BraTS-preprocessed scans (co-registered, skull-stripped, 1 mm isotropic on "
                  "the SRI24 grid): run native scans with `htcnns segment --preprocess` (docs/native-scans.md)")


def brats_space_warnings(case_id: str, volume: Volume) -> tuple[str, ...]:
    """Why the t1c ``volume`` does not look like BraTS space (thick or anisotropic voxels, a field of view far
    larger than the SRI24 grid's, signal all over the background as with the skull on): one clause each, naming
    the case and the file (``PREPARE_ADVICE`` says what to do)."""
    spacing = np.sqrt((volume.affine[:3, :3] ** 2).sum(axis=0))
    found = []
    if spacing.max() > 1.5 or spacing.min() < 0.5 or spacing.max() / spacing.min() > 1.5:
        found.append(f"its voxels are {' x '.join(f'{v:.2g}' for v in spacing)} mm, not about 1 mm isotropic")
    view = spacing * np.array(volume.data.shape)
    if (view > 1.25 * np.array(BRATS_FIELD_OF_VIEW_MM)).any():
        found.append(f"its field of view ({' x '.join(f'{v:.0f}' for v in view)} mm) is far larger than the "
                     "BraTS grid's 240 x 240 x 155 mm")
    background = float((volume.data == 0).mean())
    if background < 0.2:
        found.append(f"only {100 * background:.0f} % of its voxels are 0, as if the skull and background were "
                     "still there (BraTS scans are 0 outside the brain)")
    return tuple(f"{case_id}: {volume.path.name} may not be in BraTS space: {reason}" for reason in found)


def _check_affine(case_id: str, volume: Volume) -> None:
    affine = volume.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InputError(
            f"{case_id}: the affine of {volume.path.name} is singular or not finite, so its voxels have no place "
            "in space; fix the header's qform/sform (and pixdim) or re-export the image."
        )


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
    _check_affine(case_id, volume)
    if not np.allclose(volume.affine, reference.affine, atol=AFFINE_TOLERANCE_MM):
        raise InputError(
            f"{case_id}: the affine of {name} differs from that of {reference.path.name} "
            f"(largest difference {np.abs(volume.affine - reference.affine).max():.4g}); all four modalities "
            "must share one grid. Co-register them to t1c (e.g. BraTS preprocessing)."
        )
    check_values(case_id, name, data)


def check_values(case_id: str, name: str, data: np.ndarray) -> None:
    """An InputError when ``data`` holds NaN or infinite values, or one value everywhere."""
    low, high = float(data.min()), float(data.max())  # NaN propagates through min and max: two passes in all
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{case_id}: {name} contains NaN or infinite values; fix or re-export the image.")
    if low == high == 0:
        raise InputError(f"{case_id}: {name} is all zero; the image holds no brain to segment.")
    if low == high:
        raise InputError(f"{case_id}: {name} holds the value {low:g} in every voxel; the image holds no brain "
                         "to segment, re-export it.")


def output_problem(path: Path, inputs: Mapping[str, Path], labels: Collection[int]) -> str:
    """Why an existing output cannot be kept as its case's result, or "" when it can.

    A keepable output is a regular file (not a link), no older than any of ``inputs``, that reads as a uint8
    NIfTI with the shape and affine (to AFFINE_TOLERANCE_MM) of the t1c input and only values in ``labels``.

    Args:
        inputs: modality -> file of the case (``Case.paths``).
    """
    if path.is_symlink() or not path.is_file():
        return "it is not a regular file"
    reference = inputs["t1c"]
    try:
        newest = max(p.stat().st_mtime for p in inputs.values())
        source, written = nib.load(reference), nib.load(path)  # headers only: the cheap checks come first
    except Exception as error:  # nibabel raises many types for broken files
        return f"it cannot be read ({error_reason(error)})"
    shape = tuple(source.shape[:3])
    if path.stat().st_mtime < newest:
        return "an input file is newer than it"
    if written.get_data_dtype() != np.uint8 or written.shape != shape:
        return f"it is {written.get_data_dtype()} {written.shape}, not uint8 {shape}"
    if not np.allclose(written.affine, source.affine, atol=AFFINE_TOLERANCE_MM):
        return f"its affine differs from that of {reference.name}"
    try:
        values = set(np.unique(np.asarray(written.dataobj)).tolist())
    except Exception as error:  # a truncated or corrupt data block
        return f"it cannot be read ({error_reason(error)})"
    if not values <= set(labels):
        return f"it holds values {sorted(values - set(labels))} outside the labels {sorted(labels)}"
    return ""
