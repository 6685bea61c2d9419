"""DICOM series whose slices do not make one volume as ITK stacks them, written as real DICOM files and read back:
missing slices filled in, echoes in one series, a localiser and a tilted stack refused with one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import small_image, write_dicom_series
from htcnns.errors import InputError
from htcnns.inference.native_cases import read_native


def oblique_image(seed: int, depth: int = 12) -> sitk.Image:
    """A small scan on an oblique grid (turned 20 deg about x), 5 mm slices."""
    image = small_image(seed, (16, 14, depth))
    turn = sitk.Euler3DTransform()
    turn.SetRotation(np.radians(20), 0, 0)
    image.SetDirection(turn.GetMatrix())
    image.SetOrigin((-10.0, 20.0, 30.0))
    return image


def test_a_series_with_missing_slices_is_read_on_its_true_grid_and_filled_in(tmp_path: Path) -> None:
    image = oblique_image(0)
    write_dicom_series(image, tmp_path / "t2")
    for z in (4, 8, 9):  # one slice missing, then two in a row
        next((tmp_path / "t2").glob(f"IM01{z:03d}")).unlink()
    scan = read_native(tmp_path / "t2", "case-1")
    assert scan.image.GetSize() == image.GetSize()
    assert scan.image.GetSpacing() == pytest.approx(image.GetSpacing(), abs=1e-4)
    assert scan.image.GetOrigin() == pytest.approx(image.GetOrigin(), abs=1e-3)
    assert scan.image.GetDirection() == pytest.approx(image.GetDirection(), abs=1e-5)
    read, written = sitk.GetArrayFromImage(scan.image), sitk.GetArrayFromImage(image).astype(np.float32)
    kept = [z for z in range(12) if z not in (4, 8, 9)]
    np.testing.assert_array_equal(read[kept], written[kept])
    np.testing.assert_allclose(read[4], (written[3] + written[5]) / 2, atol=1e-3)
    np.testing.assert_allclose(read[8], written[7] + (written[10] - written[7]) / 3, atol=1e-3)
    assert scan.warnings == ("t2: 3 slice(s) missing (the widest gap 15.0 mm, after slice 7 of 9); filled in from "
                             "their neighbours",)


def test_an_even_series_is_read_as_itk_reads_it(tmp_path: Path) -> None:
    image = oblique_image(1)
    write_dicom_series(image, tmp_path / "t1c")
    scan = read_native(tmp_path / "t1c", "case-1")
    assert scan.warnings == ()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(scan.image), sitk.GetArrayFromImage(image))
    assert scan.image.GetSpacing() == pytest.approx(image.GetSpacing(), abs=1e-4)


def test_two_echoes_in_one_series_are_refused(tmp_path: Path) -> None:
    for echo in (1, 2):
        write_dicom_series(small_image(echo, (16, 14, 10)), tmp_path / "t2", slice_tags=lambda z, e=echo: {
            "0018|0086": str(e)}, prefix=f"E{echo}")
    with pytest.raises(InputError, match=r"case-2: t2 holds 20 slices at only 10 positions \(echo numbers 1, 2\): "
                                         "several echoes or repetitions in one series"):
        read_native(tmp_path / "t2", "case-2")


def test_slices_of_several_orientations_are_refused(tmp_path: Path) -> None:
    sagittal = "0\\1\\0\\0\\0\\-1"
    write_dicom_series(small_image(3, (16, 14, 9)), tmp_path / "scout",
                       slice_tags=lambda z: {"0020|0037": sagittal} if z % 3 == 0 else {})
    with pytest.raises(InputError, match=r"case-3: scout holds slices in 2 orientations \(a localiser\?\)"):
        read_native(tmp_path / "scout", "case-3")


def test_a_tilted_stack_is_refused(tmp_path: Path) -> None:
    image = small_image(4, (16, 14, 10))  # 5 mm slices, each shifted 1 mm in y: 11.3 deg gantry tilt
    write_dicom_series(image, tmp_path / "flair", slice_tags=lambda z: {"0020|0032": f"0\\{z}\\{5 * z}"})
    with pytest.raises(InputError, match=r"case-4: flair: its slices are stacked 11.3 deg off their normal"):
        read_native(tmp_path / "flair", "case-4")


def test_unevenly_spaced_slices_are_refused(tmp_path: Path) -> None:
    depths = [0, 5, 10, 15, 17.5, 22.5, 27.5, 32.5]  # one step of half a slice: not a missing slice
    write_dicom_series(small_image(5, (16, 14, 8)), tmp_path / "t1",
                       slice_tags=lambda z: {"0020|0032": f"0\\0\\{depths[z]}"})
    with pytest.raises(InputError, match=r"case-5: t1: its slices are unevenly spaced \(2.50 to 5.00 mm apart; "
                                         r"usually 5.00\)"):
        read_native(tmp_path / "t1", "case-5")
