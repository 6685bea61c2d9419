"""NIfTI reading and atomic writing with nibabel.

Arrays are in nibabel voxel order (X, Y, Z) of the file as stored; ``preprocess`` makes them RAS+ canonical.
Every file is written under a hidden temporary name (``.htcnns-*.part*``) in its final folder and renamed when
complete, so a final name never holds a half-written file; a run killed with SIGKILL may leave a temporary file,
which the next run into that folder removes (``remove_partial_files``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import imageglobals

from htcnns.errors import InputError, OutputError

MAX_VOXELS = 512**3
"""Largest volume read (a BraTS scan has 240 x 240 x 155 = 8.9 million voxels); larger headers are refused."""

PARTIAL_PREFIX = ".htcnns-"
PARTIAL_GLOB = f"{PARTIAL_PREFIX}*.part*"


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
        InputError: the file cannot be opened or decoded as NIfTI, its header claims more than MAX_VOXELS
            voxels, or it holds complex or structured (RGB) values.
    """
    try:
        with quiet_nibabel(), np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is refused later
            image = nib.load(path)
            _check_header(image, path.name, case_id)
            data = np.asarray(image.dataobj, dtype=np.float32)
    except InputError:
        raise
    except Exception as error:  # nibabel raises many types for broken files
        raise InputError(
            f"{case_id}: cannot read {path.name} as NIfTI ({error_reason(error)}); re-export or replace the file."
        ) from error
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return Volume(path, data, image)


@contextmanager
def quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's own header-check log lines; the caller turns real problems into one sentence."""
    logger = imageglobals.logger
    was_disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was_disabled


def error_reason(error: BaseException) -> str:
    """An exception as a short one-line reason: the OS's words for OS errors, else its message (200 chars)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split())[:200] or type(error).__name__


def _check_header(image: nib.Nifti1Image, name: str, case_id: str) -> None:
    voxels = int(np.prod(image.shape, dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise InputError(f"{case_id}: the header of {name} claims {image.shape} = {voxels:,} voxels, more than the "
                         f"{MAX_VOXELS:,} accepted; the header is probably corrupt, re-export the file.")
    dtype = image.get_data_dtype()
    if dtype.kind not in "biuf":
        shown = "RGB" if dtype.names else str(dtype)
        raise InputError(f"{case_id}: {name} holds {shown} values; an MRI modality must be real numbers "
                         "(integer or float), re-export the file.")


def write_label_map(labels: np.ndarray, reference: nib.Nifti1Image, path: Path) -> None:
    """Write a uint8 NIfTI-1 label map with the reference's affine, qform and sform, atomically.

    Args:
        labels: uint8 (X, Y, Z) on the reference's voxel grid.
        reference: the input image whose geometry the output must share (NIfTI-1 or NIfTI-2).
        path: final file name (``.nii.gz``).

    Raises:
        OutputError: the file cannot be written (read-only folder, disk full); no file is left behind.
    """
    with quiet_nibabel():  # a NIfTI-2 header converted to NIfTI-1 would log a harmless fix
        header = nib.Nifti1Header.from_header(reference.header)
    header.set_data_dtype(np.uint8)
    header.set_data_shape(labels.shape)
    header["cal_min"], header["cal_max"] = 0, 0
    output = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, header)
    output.header.set_slope_inter(1.0, 0.0)
    atomic_save(output, path)


def atomic_save(image: nib.Nifti1Image, path: Path) -> None:
    """Save ``image`` to ``path`` through a temporary file and a rename in the same folder (see module doc)."""
    suffix = next((s for s in (".nii.gz", ".nii") if path.name.endswith(s)), "")
    atomic_write(path, lambda temporary: nib.save(image, temporary), suffix=".part" + suffix)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8; characters UTF-8 cannot hold, e.g. the surrogates of an undecodable file name, as
    backslash escapes) to ``path`` through a temporary file and a rename in the same folder."""
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8", errors="backslashreplace"),
                 suffix=".part")


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str) -> None:
    """Call ``write(temporary)``, flush it to disk, make it mode 0644 and rename it to ``path``.

    Raises:
        OutputError: any OS error on the way (the temporary file is removed, ``path`` is untouched).
    """
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=suffix, dir=path.parent)
        os.close(handle)
        temporary = Path(name)
        write(temporary)
        _flush_to_disk(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write {path}: {error_reason(error)}") from error
        raise


def _flush_to_disk(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete the temporary files an earlier, killed run left in ``folder``; returns what was removed."""
    removed = []
    for path in folder.glob(PARTIAL_GLOB):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
