"""The native-scan simulator on small synthetic masks: the atlas brain fitted to a case's brain, and the truth the
registration error is measured against."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from htcnns.evaluation.native_sim import (
    NativeSimulation,
    fit_atlas,
    random_affine,
    registration_error_mm,
    simulate_native,
)


def ellipsoid(centre_mm: tuple[float, float, float], radii_mm: tuple[float, float, float]) -> sitk.Image:
    """A uint8 ellipsoid on a 2 mm grid of 64 x 64 x 48 voxels (x, y, z)."""
    z, y, x = np.mgrid[:48, :64, :64] * 2.0
    inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip((x, y, z), centre_mm, radii_mm, strict=True)) <= 1
    image = sitk.GetImageFromArray(inside.astype(np.uint8))
    image.SetSpacing((2.0, 2.0, 2.0))
    return image


def mm_beyond(mask: sitk.Image, brain: sitk.Image) -> np.ndarray:
    """How far (mm) each voxel of ``brain`` lies outside ``mask`` (0 inside)."""
    distance = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(distance)[sitk.GetArrayFromImage(brain) > 0], 0)


def test_the_fitted_atlas_brain_covers_the_case_brain() -> None:
    atlas = ellipsoid((64, 64, 48), (40, 50, 30))
    case = ellipsoid((62, 66, 60), (42, 47, 28))  # 12 mm higher, another shape: it pokes out of the atlas brain
    assert np.sum(mm_beyond(atlas, case) > 4) > 1000
    fit = fit_atlas(atlas, case)
    assert np.sum(mm_beyond(sitk.Resample(atlas, case, fit, sitk.sitkNearestNeighbor, 0), case) > 2.5) == 0
    assert fit.TransformPoint((62, 66, 60)) == pytest.approx((64, 64, 48), abs=0.5)
    assert np.diag(np.reshape(fit.GetMatrix(), (3, 3))) == pytest.approx((40 / 42, 50 / 47, 30 / 28), abs=0.01)
    assert fit_atlas(atlas, case).GetParameters() == fit.GetParameters()  # deterministic


def test_registration_error_is_measured_against_pose_and_fit() -> None:
    brain = ellipsoid((64, 64, 48), (30, 30, 20))
    rng = np.random.default_rng(0)
    pose = random_affine(rng, (64, 64, 48), 12.0, 20.0, 0.06)
    fit = sitk.AffineTransform(3)
    fit.SetTranslation((0.0, 0.0, -12.0))
    truth = NativeSimulation({}, pose, fit)
    assert registration_error_mm(truth.native_to_atlas.GetInverse(), truth, brain, step=2) < 1e-6
    assert registration_error_mm(pose.GetInverse(), truth, brain, step=2) > 5  # the pose alone misses the fit
    moved = truth.in_atlas_space(brain)
    assert moved[:, 32, 32].nonzero()[0].mean() == pytest.approx(24 - 6, abs=0.6)  # 12 mm = 6 slices lower


def test_each_sequence_is_sampled_on_its_own_grid_with_the_slices_asked_for() -> None:
    head = sitk.Cast(ellipsoid((64, 64, 48), (60, 60, 44)), sitk.sitkFloat32) * 100
    brain = ellipsoid((64, 64, 48), (40, 50, 30))
    images = {m: sitk.Cast(brain, sitk.sitkFloat32) * (50 + i) for i, m in enumerate(("t1n", "t1c", "t2w", "t2f"))}
    grids = {"t1c": (1.0, 1.0), "t1n": (1.0, 5.0), "t2w": (0.7, 5.0), "t2f": (2.0, 3.0)}
    native = simulate_native(images, head, brain, seed=0, grids=grids).images
    for modality, (in_plane, thickness) in grids.items():
        assert native[modality].GetSpacing() == pytest.approx((in_plane, in_plane, thickness))
        assert native[modality].GetSize()[2] == 170 // thickness  # the 170 mm field of view in whole slices
    assert sitk.GetArrayViewFromImage(native["t2f"]).max() > 0  # the head is in view
