"""NIfTI reading and atomic writing with nibabel.

Arrays are in nibabel voxel order (X, Y, Z) of the file as stored; ``preprocess`` makes them RAS+ canonical.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from htcnns.errors import InputError


@dataclass(frozen=True)
class Volume:
    """One modality image as read from disk.

    data: float32 (X, Y, Z) after squeezing trailing singleton axes (any other shape is kept for validation).
    image: the nibabel image, whose header geometry (affine, qform, sform) the output copies.
    """

    path: Path
    data: np.ndarray
    image: nib.Nifti1Image

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world matrix in mm."""
        return self.image.affine


def read_volume(path: Path, case_id: str) -> Volume:
    """Read one NIfTI file as float32, squeezing trailing singleton axes (X, Y, Z, 1 -> X, Y, Z).

    Raises:
        InputError: the file cannot be opened or decoded as NIfTI.
    """
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many types for broken files
        raise InputError(f"{case_id}: cannot read {path.name} as NIfTI ({error})") from error
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return Volume(path, data, image)


def write_label_map(labels: np.ndarray, reference: nib.Nifti1Image, path: Path) -> None:
    """Write a uint8 label map with the reference's affine, qform and sform, atomically.

    The data goes to a hidden temporary file in the same folder, which is renamed to ``path`` only when
    complete, so no half-written file ever carries the final name.

    Args:
        labels: uint8 (X, Y, Z) on the reference's voxel grid.
        reference: the input image whose geometry the output must share.
        path: final file name (``.nii.gz``).
    """
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(labels.shape)
    header["cal_min"], header["cal_max"] = 0, 0
    output = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, header)
    output.header.set_slope_inter(1.0, 0.0)
    atomic_save(output, path)


def atomic_save(image: nib.Nifti1Image, path: Path) -> None:
    """Save ``image`` to ``path`` through a temporary file and a rename in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part.nii.gz", dir=path.parent)
    os.close(handle)
    try:
        nib.save(image, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
