"""qc.py: region volumes from the affine, and QC pictures of the real case read back as images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import LPS_AFFINE, REAL_CASE
from htcnns.inference.qc import load_qc_inputs, region_volumes_ml, slice_centre, voxel_ml, write_case_qc

REAL_ID = "BraTS-GLI-00001-000"


def label_map() -> np.ndarray:
    """1000 NCR, 2000 ED and 500 ET voxels."""
    labels = np.zeros((40, 30, 20), np.uint8)
    labels[:10, :10, :10] = 1
    labels[10:30, :10, :10] = 2
    labels[30:35, :10, :10] = 3
    return labels


def test_volumes_with_an_anisotropic_oblique_affine():
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.5, 2.0, 3.0])  # 3 mm^3 voxels, LPS-like flip, rotated
    affine[:3, 3] = (12, -40, 7)
    assert voxel_ml(affine) == pytest.approx(0.003)
    volumes = region_volumes_ml(label_map(), affine)
    assert volumes == pytest.approx({"NCR": 3.0, "ED": 6.0, "ET": 1.5, "TC": 4.5, "WT": 10.5})
    assert list(volumes) == ["NCR", "ED", "ET", "TC", "WT"]
    assert region_volumes_ml(np.zeros((4, 4, 4), np.uint8), LPS_AFFINE) == dict.fromkeys(volumes, 0.0)


def test_slice_centre_falls_back_to_the_brain_then_the_volume():
    labels, image = np.zeros((20, 10, 8), np.uint8), np.zeros((20, 10, 8), np.float32)
    assert slice_centre(labels, image) == (10, 5, 4)
    image[2:6, 2:4, 0:2] = -1  # z-scored: negative inside the brain counts too
    assert slice_centre(labels, image) == (4, 2, 0)  # 3.5, 2.5, 0.5 rounded half to even
    labels[15, 8, 6] = 2
    assert slice_centre(labels, image) == (15, 8, 6)


def read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def test_synthetic_case_without_tumour_and_bad_ids(tmp_path: Path):
    rng = np.random.default_rng(0)
    image = np.zeros((24, 28, 12), np.float32)
    image[4:20, 4:24, 2:10] = rng.normal(100, 10, (16, 20, 8))
    qc = write_case_qc("case one", image, image * 2, np.zeros(image.shape, np.uint8), LPS_AFFINE, tmp_path / "qc")
    assert qc.volumes_ml["WT"] == 0.0 and qc.seconds > 0
    assert qc.to_report() == {"volumes_ml": qc.volumes_ml, "qc_picture": "case one.png",
                              "qc_thumbnail": "case one-thumb.png"}
    assert read_png(qc.picture).std() > 0.05 and read_png(qc.thumbnail).shape[:2] == (200, 200)
    assert sorted(p.name for p in (tmp_path / "qc").iterdir()) == ["case one-thumb.png", "case one.png"]
    for bad in ("../escape", ".hidden"):
        with pytest.raises(ValueError, match="case id"):
            write_case_qc(bad, image, image, np.zeros(image.shape, np.uint8), LPS_AFFINE, tmp_path / "qc")
    with pytest.raises(ValueError, match="one shape"):
        write_case_qc("x", image, image[:-1], np.zeros(image.shape, np.uint8), LPS_AFFINE, tmp_path / "qc")


@pytest.mark.skipif(not (REAL_CASE / "seg-BraTS23_1.nii.gz").exists(), reason="real case not in ../shared/data")
def test_real_case_picture_and_thumbnail(tmp_path: Path):
    t1c, flair, labels, affine = load_qc_inputs(REAL_CASE / f"{REAL_ID}-t1c.nii.gz",
                                                REAL_CASE / f"{REAL_ID}-t2f.nii.gz", REAL_CASE / "seg-BraTS23_1.nii.gz")
    qc = write_case_qc(REAL_ID, t1c, flair, labels, affine, tmp_path)
    # the label counts in ../shared/data/brats2023-gli-00001-000/README.md, 1 mm^3 voxels
    assert qc.volumes_ml == pytest.approx({"NCR": 17.878, "ED": 88.029, "ET": 23.327, "TC": 41.205,
                                           "WT": 129.234})
    assert qc.picture.stat().st_size < 300_000 and qc.thumbnail.stat().st_size < 60_000
    picture = read_png(qc.picture)
    assert picture.shape[:2] == (576, 800)
    rgb = picture[..., :3]
    assert rgb.std() > 0.1  # not blank
    red = (rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.45) & (rgb[..., 2] < 0.45)  # NCR overlay
    yellow = (rgb[..., 0] > 0.7) & (rgb[..., 1] > 0.7) & (rgb[..., 2] < 0.4)  # ET overlay
    assert red.sum() > 500 and yellow.sum() > 500
    thumbnail = read_png(qc.thumbnail)[..., :3]
    assert thumbnail.shape[:2] == (200, 200) and thumbnail.std() > 0.1
    assert not list(tmp_path.glob(".htcnns-*"))  # written atomically, no temporary file left
