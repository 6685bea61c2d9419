import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE, brain_volumes
from htcnns.inference.preprocess import (
    CROP_MARGIN_VOXELS,
    brain_box,
    preprocess,
    restore_input_grid,
    statistics_region,
    to_prepared_grid,
    zscore,
)
from htcnns.inference.validate import LoadedCase

PERMUTED = np.array([[0, 0, 1.0, 5], [-1.0, 0, 0, 7], [0, 1.2, 0, -3], [0, 0, 0, 1]])
AFFINES = [np.eye(4), LPS_AFFINE, PERMUTED]


def loaded_case(affine: np.ndarray, shape=(32, 36, 24)) -> LoadedCase:
    image = brain_volumes(shape)
    return LoadedCase("c", image, nib.Nifti1Image(np.zeros(shape, np.int16), affine))


@pytest.mark.parametrize("affine", AFFINES, ids=["ras", "lps", "permuted"])
def test_prepared_grid_is_ras_and_restore_is_exact_inverse(affine):
    case = loaded_case(affine)
    prepared = preprocess(case)
    labels = np.zeros(case.image.shape[1:], np.uint8)
    labels[case.image[0] > 110] = 2          # any pattern inside the brain
    labels[5, 6, 4] = 3
    on_grid = to_prepared_grid(labels, prepared)
    assert on_grid.shape == prepared.image.shape[1:]
    assert np.array_equal(restore_input_grid(on_grid, prepared), labels)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(labels, affine))
    assert np.array_equal(np.asarray(canonical.dataobj)[prepared.crop], on_grid)


def test_crop_keeps_margin_and_zscore_is_over_brain():
    prepared = preprocess(loaded_case(np.eye(4)))
    # the brain is voxels 4..27, 5..30, 3..20; margin 4, clipped at 0
    assert prepared.crop == (slice(0, 32), slice(1, 35), slice(0, 24))
    brain_values = prepared.image[:, prepared.brain]
    assert np.allclose(brain_values.mean(axis=1), 0, atol=1e-4)
    assert np.allclose(brain_values.std(axis=1), 1, atol=1e-4)
    assert not prepared.image[:, ~prepared.brain].any()


def test_brain_box_margin_is_clipped_at_border():
    brain = np.zeros((20, 20, 20), bool)
    brain[2:5, 10:12, 15:20] = True
    assert brain_box(brain, CROP_MARGIN_VOXELS) == (slice(0, 9), slice(6, 16), slice(11, 20))


def test_constant_modality_becomes_zero_not_nan():
    case = loaded_case(np.eye(4))
    case.image[2][case.image[2] > 0] = 7.0
    prepared = preprocess(case)
    assert np.isfinite(prepared.image).all() and not prepared.image[2].any()


def test_zscore_statistics_ignore_the_brain_shell_where_skull_strippings_differ():
    shape = (64, 64, 64)
    image = np.zeros((4, *shape), np.float32)
    image[:, 4:60, 4:60, 4:60] = np.random.default_rng(0).normal(100, 10, (4, 56, 56, 56))
    image[:, 4:6, 4:60, 4:60] = 30  # a dark 2-voxel shell (surface CSF) on one side that a second stripping removes
    stripped = image.copy()
    stripped[:, 4:6] = 0
    first, second = (preprocess(LoadedCase("c", im, nib.Nifti1Image(np.zeros(shape), np.eye(4))))
                     for im in (image, stripped))
    assert first.brain.sum() > second.brain.sum()
    deep = (slice(None), *(slice(20, 44),) * 3)  # crops start at x 0 and x 2: the same voxels deep in the brain
    shifted = (slice(None), slice(22, 46), slice(20, 44), slice(20, 44))
    assert np.abs(first.image[shifted] - second.image[deep]).max() < 0.02
    whole_brain = (zscore(im.image, im.brain) for im in (first, second))  # statistics over all of each brain
    assert np.abs(next(whole_brain)[shifted] - next(whole_brain)[deep]).max() > 0.2
    region = statistics_region(first.brain)
    assert region.sum() < first.brain.sum()
    assert np.allclose(first.image[:, region].mean(axis=1), 0, atol=1e-4)
    assert np.allclose(first.image[:, region].std(axis=1), 1, atol=1e-4)


def test_a_small_brain_takes_statistics_over_all_of_it():
    brain = preprocess(loaded_case(np.eye(4))).brain
    assert np.array_equal(statistics_region(brain), brain)
