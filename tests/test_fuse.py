"""STAPLE on known rater sets, against SimpleITK's STAPLEImageFilter, and the nested fusion of label maps."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from htcnns.fuse import FusionMethod, fuse_label_maps, staple
from htcnns.labels import Label


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


@pytest.mark.parametrize(("count", "seed"), [(2, 0), (3, 1), (4, 2), (7, 3)], ids=["2", "3", "4", "7"])
def test_staple_matches_simpleitk(count, seed):
    raters = noisy_raters(count, seed)
    ours = staple(torch.from_numpy(raters))
    probability, sensitivity, specificity = simpleitk_staple(raters)
    assert np.array_equal(ours.probability.numpy() > 0.5, probability > 0.5)
    assert np.abs(ours.probability.numpy() - probability).max() < 1e-6
    assert np.allclose(ours.sensitivity.numpy(), sensitivity, atol=1e-8)
    assert np.allclose(ours.specificity.numpy(), specificity, atol=1e-8)


def test_identical_raters_give_their_mask():
    rater = noisy_raters(1, 5)[0]
    result = staple(torch.from_numpy(np.stack([rater] * 3)))
    assert np.array_equal(result.probability.numpy() > 0.5, rater)


def test_all_empty_raters_give_empty_mask_without_nan():
    result = staple(torch.zeros((3, 5, 5, 5), dtype=torch.bool))
    assert torch.isfinite(result.probability).all() and not (result.probability > 0.5).any()


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
