"""STAPLE on known rater sets, against SimpleITK's STAPLEImageFilter, and the nested fusion of label maps."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from conftest import SHARED, require_real_case
from htcnns.inference.fuse import (
    FusionMethod,
    _numpy_patterns,
    _torch_patterns,
    foreground_box,
    fuse_label_maps,
    lookup,
    rater_regions,
    staple,
)
from htcnns.labels import REGIONS, Label


def noisy_raters(count: int, seed: int) -> np.ndarray:
    """bool (count, 30, 32, 28): a box truth seen by raters with different miss and false-alarm rates."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((30, 32, 28), bool)
    truth[8:22, 6:25, 5:20] = True
    misses, alarms = rng.uniform(0.02, 0.3, count), rng.uniform(0.0, 0.05, count)
    return np.stack([truth & (rng.random(truth.shape) > m) | ~truth & (rng.random(truth.shape) < a)
                     for m, a in zip(misses, alarms, strict=True)])


def simpleitk_staple(raters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1)
    probability = staple_filter.Execute([sitk.GetImageFromArray(r.astype(np.uint8)) for r in raters])
    return (sitk.GetArrayFromImage(probability), np.array(staple_filter.GetSensitivity()),
            np.array(staple_filter.GetSpecificity()))


def assert_matches_simpleitk(raters: np.ndarray, tolerance: float = 1e-6) -> None:
    """Same final mask as SimpleITK; posterior, sensitivity and specificity within ``tolerance``."""
    ours = staple(torch.from_numpy(raters))
    probability, sensitivity, specificity = simpleitk_staple(raters)
    assert np.array_equal(ours.mask().numpy(), probability > 0.5)
    assert np.abs(ours.probability.numpy() - probability).max() < tolerance
    assert np.abs(ours.sensitivity.numpy() - sensitivity).max() < tolerance
    assert np.abs(ours.specificity.numpy() - specificity).max() < tolerance


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6, 7])
def test_staple_matches_simpleitk(count):
    assert_matches_simpleitk(noisy_raters(count, seed=count))


def test_staple_matches_simpleitk_with_identical_raters():
    assert_matches_simpleitk(np.stack([noisy_raters(1, 5)[0]] * 3))


def test_staple_matches_simpleitk_with_one_empty_rater():
    raters = noisy_raters(4, 9)
    raters[1] = False
    assert_matches_simpleitk(raters)


def canonical_labels(path: Path) -> np.ndarray:
    """A label map in RAS+ voxel order with BraTS 2023 values (4 -> 3)."""
    labels = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj).astype(np.uint8)
    labels[labels == 4] = Label.ET
    return labels


def brats2023_raters() -> list[np.ndarray]:
    """The winner's and isen's segmentations of BraTS-GLI-00001-000, plus the winner's eroded by one voxel."""
    case = require_real_case()
    winner, isen = (canonical_labels(case / name) for name in ("seg-BraTS23_1.nii.gz", "seg-bratstoolkit_isen.nii.gz"))
    eroded = np.where(ndimage.binary_erosion(winner > 0), winner, 0).astype(np.uint8)
    return [winner, isen, eroded]


def deepmedic_raters() -> list[np.ndarray]:
    """The expert map of DeepMedic's pat0001 and three perturbed copies: shifted, grown, with ET thinned."""
    path = SHARED / "data/deepmedic-brats2015/brats2015TrainingData/test/brats_2013_pat0001_1/OTMultiClass.nii.gz"
    if not path.is_file():
        pytest.skip(f"shared DeepMedic data not present at {path}")
    truth = np.asarray(nib.load(path).dataobj).astype(np.uint8)
    truth = np.array([0, 1, 2, 1, 3], np.uint8)[truth]  # BraTS 2015 -> 2023: non-enhancing joins NCR, ET is 3
    shifted = np.roll(truth, 2, axis=0)
    grown = np.where((truth == 0) & ndimage.binary_dilation(truth > 0, iterations=2), 2, truth).astype(np.uint8)
    thinned = np.where((truth == 3) & ~ndimage.binary_erosion(truth == 3), 1, truth).astype(np.uint8)
    return [truth, shifted, grown, thinned]


@pytest.mark.slow
@pytest.mark.parametrize("rater_set", [brats2023_raters, deepmedic_raters], ids=["gli00001", "deepmedic"])
def test_staple_matches_simpleitk_on_real_segmentations(rater_set):
    regions = rater_regions(rater_set()).numpy()
    for region, raters in zip(REGIONS, regions, strict=True):
        assert raters.any(), region
        assert_matches_simpleitk(raters, tolerance=1e-4)


def test_gpu_path_packs_and_looks_up_like_the_cpu_path():
    raters = noisy_raters(9, 11)
    packed = _torch_patterns(torch.from_numpy(raters), torch.int32)
    assert np.array_equal(packed.numpy(), _numpy_patterns(raters, np.dtype(np.int32)))
    table = torch.rand(2**9, dtype=torch.float64)
    assert torch.equal(lookup(table, packed), table[packed.long()])


def test_identical_raters_give_their_mask():
    rater = noisy_raters(1, 5)[0]
    result = staple(torch.from_numpy(np.stack([rater] * 3)))
    assert np.array_equal(result.probability.numpy() > 0.5, rater)


def test_all_empty_raters_give_empty_mask_without_nan_as_simpleitk():
    raters = np.zeros((3, 5, 5, 5), dtype=bool)
    result = staple(torch.from_numpy(raters))
    assert torch.isfinite(result.probability).all() and not result.mask().any()
    probability, _, _ = simpleitk_staple(raters)
    assert not (probability > 0.5).any()


def test_one_empty_rater_is_outvoted_and_gets_low_sensitivity():
    raters = noisy_raters(3, 7)
    raters[2] = False
    result = staple(torch.from_numpy(raters))
    assert result.sensitivity[2] < 0.01
    assert (result.probability.numpy() > 0.5).sum() > 0.5 * raters[0].sum()


def test_too_many_raters_is_refused():
    with pytest.raises(ValueError, match="1 to 20 raters, got 21"):
        staple(torch.zeros((21, 2, 2, 2), dtype=torch.bool))


def test_fused_label_map_is_nested_and_majority_agrees_on_clear_votes():
    base = np.zeros((12, 12, 12), np.uint8)
    base[2:10, 2:10, 2:10] = Label.ED
    base[4:8, 4:8, 4:8] = Label.NCR
    base[5:7, 5:7, 5:7] = Label.ET
    odd = base.copy()
    odd[0, 0, 0] = Label.ET                         # one rater's stray ET outside everyone's WT
    for method in FusionMethod:
        fused = fuse_label_maps([base, base, odd], method)
        assert np.array_equal(fused, base), method


def test_foreground_box_bounds_every_rater_and_is_empty_without_foreground():
    masks = torch.zeros((3, 10, 12, 8), dtype=torch.bool)
    masks[0, 2, 3, 4] = masks[2, 7, 9, 1] = True
    assert foreground_box(masks) == (slice(2, 8), slice(3, 10), slice(1, 5))
    assert foreground_box(torch.zeros((2, 4, 4, 4), dtype=torch.bool)) == (slice(0, 0),) * 3
