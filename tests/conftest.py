"""Shared fixtures: real NIfTI files in tmp_path with non-identity affines, and tiny saved models."""

from __future__ import annotations

import locale
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from htcnns.labels import MODALITIES

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_CASE = SHARED / "data" / "brats2023-gli-00001-000"
LPS_AFFINE = np.array([[-1.0, 0, 0, 30], [0, -1.0, 0, 40], [0, 0, 1.5, -10], [0, 0, 0, 1]])


def brain_volumes(shape: tuple[int, int, int] = (32, 36, 24), seed: int = 0) -> np.ndarray:
    """float32 (4, X, Y, Z): noisy positive intensities inside a box 'brain', 0 outside."""
    rng = np.random.default_rng(seed)
    image = np.zeros((4, *shape), np.float32)
    image[:, 4:-4, 5:-5, 3:-3] = rng.normal(100, 20, (4, shape[0] - 8, shape[1] - 10, shape[2] - 6)).clip(1)
    return image


def write_case(folder: Path, case_id: str, image: np.ndarray, affine: np.ndarray = LPS_AFFINE,
               naming: str = "brats2023", suffix: str = ".nii.gz") -> Path:
    """Write the four modalities of ``image`` (4, X, Y, Z) as BraTS-named NIfTI files in ``folder``."""
    names = {"brats2023": {m: f"-{m}" for m in MODALITIES},
             "brats2021": {"t1n": "_t1", "t1c": "_t1ce", "t2w": "_t2", "t2f": "_flair"}}[naming]
    folder.mkdir(parents=True, exist_ok=True)
    for channel, modality in enumerate(MODALITIES):
        nib.save(nib.Nifti1Image(image[channel], affine), folder / f"{case_id}{names[modality]}{suffix}")
    return folder


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """A BraTS 2023 case folder: four 32x36x24 volumes, 1 x 1 x 1.5 mm, LPS affine."""
    return write_case(tmp_path / "in" / "BraTS-GLI-00002-000", "BraTS-GLI-00002-000", brain_volumes())


def save_tiny_models(root: Path, seed: int = 0, onnx: bool = False, roi: int = 32) -> Path:
    """Three randomly initialised compact models (one per architecture, ROI ``roi``) as a models folder ``root``;
    with ``onnx`` each also gets its ONNX file. On a whole BraTS case ROI 64 ran 2.1x faster than 32 here (fewer
    windows for the same work per voxel); larger ROIs suit whole-brain tests."""
    import torch

    from htcnns.networks import PRESETS, build_network
    from htcnns.weights import Manifest, save_model

    for architecture in sorted(PRESETS):
        torch.manual_seed(seed)
        config = dict(PRESETS[architecture]["compact"])
        if "roi_size" in config:
            config["roi_size"] = roi
        network = build_network(architecture, config)
        save_model(network, Manifest(architecture, architecture, config, (roi,) * 3, ""), root / architecture,
                   onnx=onnx)
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three randomly initialised compact models (one per architecture) saved as a models folder, ROI 32."""
    return save_tiny_models(tmp_path_factory.mktemp("models"))


def require_real_case() -> Path:
    """The shared real BraTS case, or skip the test when ../shared is absent."""
    if not (REAL_CASE / "BraTS-GLI-00001-000-t1c.nii.gz").is_file():
        pytest.skip(f"shared real data not present at {REAL_CASE}")
    return REAL_CASE


TUMOUR_BOX = (slice(100, 200), slice(50, 190), slice(20, 120))
"""A box of the real case holding all of its tumour in 40 % of its brain's box (tests that segment it twice)."""


def write_real_crop(folder: Path, names: dict[str, str] | None = None) -> Path:
    """The real case's four modalities cut to ``TUMOUR_BOX`` (nibabel's slicer keeps the voxels' world
    positions) as ``folder/<name>``: its own names, or ``names[modality]``."""
    case = require_real_case()
    folder.mkdir(parents=True, exist_ok=True)
    for modality in MODALITIES:
        image = nib.load(case / f"BraTS-GLI-00001-000-{modality}.nii.gz")
        name = (names or {}).get(modality, f"BraTS-GLI-00001-000-{modality}.nii.gz")
        nib.save(image.slicer[TUMOUR_BOX], folder / name)
    return folder


def small_image(seed: int, size: tuple[int, int, int] = (20, 18, 6),
                spacing: tuple[float, ...] = (1.2, 1.2, 5.0)) -> sitk.Image:
    """Random int16 voxels on an axis-aligned grid: a stand-in scan for reading and naming tests."""
    image = sitk.GetImageFromArray(np.random.default_rng(seed).uniform(0, 500, size[::-1]).astype(np.int16))
    image.SetSpacing(spacing)
    return image


def write_dicom_series(image: sitk.Image, folder: Path, description: str = "", number: int = 1,
                       slice_tags: Callable[[int], dict[str, str]] | None = None, prefix: str = "IM") -> None:
    """One file per slice, as a scanner writes them (SimpleITK's DICOM writer; GDCM may leave the "C" locale);
    ``number`` sets the series UID, so several series can share a folder; ``slice_tags(z)`` adds or overrides
    tags of slice z (its position, orientation, echo number ...); ``prefix`` starts the file names."""
    saved = locale.setlocale(locale.LC_ALL)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # file names without .dcm, as scanners write them
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        piece.SetMetaData("0020|000e", f"1.2.826.0.1.3680043.2.1125.1.{number}")  # one series UID for all slices
        piece.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z)))))
        piece.SetMetaData("0020|0013", str(z))
        piece.SetMetaData("0020|0011", str(number))
        piece.SetMetaData("0020|0037", "\\".join(map(str, np.array(image.GetDirection()).reshape(3, 3).T[:2].ravel())))
        piece.SetMetaData("0018|0050", str(image.GetSpacing()[2]))
        piece.SetMetaData("0008|103e", description)
        for key, value in (slice_tags(z) if slice_tags else {}).items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{number:02d}{z:03d}"))
        writer.Execute(piece)
    locale.setlocale(locale.LC_ALL, saved)
