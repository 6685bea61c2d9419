"""Each post-processing rule at its boundary, on hand-placed blobs."""

import numpy as np
import pytest
from scipy import ndimage

from htcnns.inference.postprocess import (
    PostprocessParams,
    apply_et_threshold,
    labels_from_probs,
    postprocess,
    relabel_small_et_components,
    relabel_small_total_et,
    remove_thin_oedema,
)
from htcnns.labels import Label

SHAPE = (40, 40, 40)


def et_blob(voxels: int, prob: float, origin=(2, 2, 2)) -> tuple[np.ndarray, np.ndarray]:
    """An ET component of exactly ``voxels`` voxels (a line in x, wrapped into rows) with constant probability."""
    labels = np.zeros(SHAPE, np.uint8)
    et_prob = np.zeros(SHAPE, np.float32)
    x0, y0, z0 = origin
    for i in range(voxels):
        labels[x0 + i % 10, y0 + i // 10, z0] = Label.ET
    et_prob[labels == Label.ET] = prob
    return labels, et_prob


@pytest.mark.parametrize(
    ("voxels", "prob", "stays_et"),
    [(15, 0.5, False), (16, 0.5, True), (15, 0.89, False), (15, 0.9, True), (15, 0.95, True), (1, 0.1, False)],
    ids=["15-low", "16-low", "15-just-below", "15-exactly-0.9", "15-high", "single-voxel"],
)
def test_small_component_rule_at_boundaries(voxels, prob, stays_et):
    labels, et_prob = et_blob(voxels, prob)
    result = relabel_small_et_components(labels, et_prob, min_voxels=16, min_mean_prob=0.9)
    assert (result == Label.ET).sum() == (voxels if stays_et else 0)
    assert (result == Label.NCR).sum() == (0 if stays_et else voxels)
    assert (labels == Label.ET).sum() == voxels, "input must not be modified"


def test_small_component_rule_uses_mean_probability_and_26_connectivity():
    labels = np.zeros(SHAPE, np.uint8)
    et_prob = np.zeros(SHAPE, np.float32)
    diagonal = [(5 + i, 5 + i, 5 + i) for i in range(10)]   # one component only under 26-connectivity
    for index, voxel in enumerate(diagonal):
        labels[voxel] = Label.ET
        et_prob[voxel] = 1.0 if index < 5 else 0.85          # mean 0.925 >= 0.9
    result = relabel_small_et_components(labels, et_prob, min_voxels=16, min_mean_prob=0.9)
    assert (result == Label.ET).sum() == 10


def test_each_component_is_judged_alone():
    small, small_prob = et_blob(10, 0.5, origin=(2, 2, 2))
    large, large_prob = et_blob(30, 0.5, origin=(20, 20, 20))
    result = relabel_small_et_components(small | large, small_prob + large_prob, min_voxels=16, min_mean_prob=0.9)
    assert (result == Label.ET).sum() == 30 and (result == Label.NCR).sum() == 10


@pytest.mark.parametrize(
    ("voxels", "prob", "stays_et"),
    [(72, 0.5, False), (73, 0.5, True), (72, 0.9, True), (72, 0.899, False)],
    ids=["72-low", "73-low", "72-exactly-0.9", "72-just-below"],
)
def test_total_et_rule_at_boundaries(voxels, prob, stays_et):
    labels, et_prob = et_blob(voxels, prob)
    result = relabel_small_total_et(labels, et_prob, min_voxels=73, min_mean_prob=0.9)
    assert (result == Label.ET).sum() == (voxels if stays_et else 0)


def test_total_et_rule_counts_all_components_together():
    a, a_prob = et_blob(40, 0.5, origin=(2, 2, 2))
    b, b_prob = et_blob(40, 0.5, origin=(20, 20, 20))
    result = relabel_small_total_et(a | b, a_prob + b_prob, min_voxels=73, min_mean_prob=0.9)
    assert (result == Label.ET).sum() == 80


@pytest.mark.parametrize(("prob", "stays_et"), [(0.69, False), (0.7, True), (0.71, True)],
                         ids=["below", "at", "above"])
def test_et_threshold_edge(prob, stays_et):
    labels, et_prob = et_blob(100, np.float32(prob))
    result = apply_et_threshold(labels, et_prob, float(np.float32(0.7)))
    assert (result == Label.ET).sum() == (100 if stays_et else 0)


def test_labels_from_probs_nests_regions():
    probs = np.zeros((3, 1, 1, 5), np.float32)
    probs[:, 0, 0, 0] = [0.9, 0.2, 0.1]     # ED
    probs[:, 0, 0, 1] = [0.9, 0.8, 0.1]     # NCR
    probs[:, 0, 0, 2] = [0.9, 0.8, 0.7]     # ET
    probs[:, 0, 0, 3] = [0.4, 0.9, 0.9]     # not WT -> background
    probs[:, 0, 0, 4] = [0.5, 0.5, 0.5]     # decision at exactly 0.5 is inside
    assert labels_from_probs(probs)[0, 0].tolist() == [2, 1, 3, 0, 3]


def literal_postprocess(probs: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """A slow restatement of the paper's rules with scipy labelling, to compare against."""
    from scipy import ndimage

    wt, tc, et = probs[0] >= 0.5, probs[1] >= 0.5, probs[2] >= 0.5
    labels = np.zeros(wt.shape, np.uint8)
    labels[wt] = 2
    labels[wt & tc] = 1
    labels[wt & tc & et & (probs[2] >= params.et_threshold)] = 3
    components, count = ndimage.label(labels == 3, structure=np.ones((3, 3, 3)))
    for index in range(1, count + 1):
        voxels = components == index
        if voxels.sum() < params.min_et_component_voxels and probs[2][voxels].mean(dtype=np.float64) < np.float32(0.9):
            labels[voxels] = 1
    et_voxels = labels == 3
    total_mean = probs[2][et_voxels].mean(dtype=np.float64) if et_voxels.any() else 1.0
    if et_voxels.sum() < params.min_total_et_voxels and total_mean < np.float32(0.9):
        labels[et_voxels] = 1
    return labels


@pytest.mark.parametrize("seed", range(4))
def test_postprocess_equals_literal_restatement(seed):
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    probs = np.stack([gaussian_filter(rng.random((30, 30, 30)), 1.5) for _ in range(3)]).astype(np.float32)
    probs = (probs - probs.min()) / (probs.max() - probs.min())
    params = PostprocessParams(et_threshold=0.55)
    assert np.array_equal(postprocess(probs, params), literal_postprocess(probs, params))


def test_brain_mask_clears_outside():
    probs = np.ones((3, 4, 4, 4), np.float32)
    brain = np.zeros((4, 4, 4), bool)
    brain[1:3, 1:3, 1:3] = True
    labels = postprocess(probs, PostprocessParams(min_total_et_voxels=0), brain=brain)
    assert (labels > 0).sum() == 8 and not labels[~brain].any()


def scene(components: list[tuple[int, float]]) -> np.ndarray:
    """Region probabilities (3, 40, 40, 40): one tumour core (WT = TC = 1) holding ET components of
    (voxels, p(ET)) each, far apart; the core around them is NCR, so every ET component touches NCR."""
    probs = np.zeros((3, *SHAPE), np.float32)
    probs[:2, 1:39, 1:39, 1:39] = 1.0
    for index, (voxels, prob) in enumerate(components):
        labels, et_prob = et_blob(voxels, prob, origin=(2 + 12 * (index % 3), 2 + 12 * (index // 3), 5 + index))
        probs[2][labels == Label.ET] = et_prob[labels == Label.ET]
    return probs


LARGE_SURE_ET = (100, 0.95)  # keeps the total-ET rule out of the way of the per-component rule


@pytest.mark.parametrize(
    ("components", "et_threshold", "et_voxels"),
    [
        ([(15, 0.6), LARGE_SURE_ET], 0.5, 100),
        ([(16, 0.6), LARGE_SURE_ET], 0.5, 116),
        ([(15, float(np.float32(0.9)) - 1e-6), LARGE_SURE_ET], 0.5, 100),
        ([(15, 0.9), LARGE_SURE_ET], 0.5, 115),
        ([(72, 0.6)], 0.5, 0),
        ([(73, 0.6)], 0.5, 73),
        ([(40, 0.6), (32, 0.6)], 0.5, 0),
        ([(40, 0.6), (33, 0.6)], 0.5, 73),
        ([(72, 0.9)], 0.5, 72),
        ([(72, 0.8999)], 0.5, 0),
        ([(100, 0.7)], float(np.float32(0.7)), 100),
        ([(100, 0.7)], 0.70001, 0),
    ],
    ids=["component-15", "component-16", "mean-just-below-0.9", "mean-0.9", "total-72", "total-73",
         "total-72-in-two", "total-73-in-two", "total-72-mean-0.9", "total-72-mean-below", "threshold-at",
         "threshold-above"],
)
def test_rules_at_their_boundaries_agree_with_the_literal_restatement(components, et_threshold, et_voxels):
    probs = scene(components)
    params = PostprocessParams(et_threshold=et_threshold)
    ours = postprocess(probs, params)
    assert np.array_equal(ours, literal_postprocess(probs, params))
    assert (ours == Label.ET).sum() == et_voxels
    assert (ours > 0).sum() == (probs[0] >= 0.5).sum(), "demoted ET must become NCR, never background"


def ball(radius: int) -> np.ndarray:
    grid = np.mgrid[(slice(-radius, radius + 1),) * 3]
    return (grid**2).sum(axis=0) <= radius * radius + 0.5


def rim_case() -> np.ndarray:
    """A tumour (ED ball of radius 10 around an NCR/ET core) touching a 2-voxel rim of ED along one face."""
    grid = np.mgrid[:48, :48, :48]
    labels = np.zeros((48, 48, 48), np.uint8)
    labels[((grid - 20) ** 2).sum(axis=0) <= 100] = Label.ED
    labels[((grid - 20) ** 2).sum(axis=0) <= 16] = Label.NCR
    labels[((grid - 20) ** 2).sum(axis=0) <= 4] = Label.ET
    labels[29:31, 2:46, 2:46] = np.where(labels[29:31, 2:46, 2:46] == 0, Label.ED, labels[29:31, 2:46, 2:46])
    labels[40, 40, 40] = Label.NCR  # a lone core voxel: never removed
    return labels


def test_thin_oedema_rim_goes_and_the_tumour_stays():
    labels = rim_case()
    cleaned = remove_thin_oedema(labels, 4)
    assert not cleaned[29:31, 40:46, 2:46].any()  # the rim, away from the tumour
    tumour = ((np.mgrid[:48, :48, :48] - 20) ** 2).sum(axis=0) <= 100
    np.testing.assert_array_equal(cleaned[tumour], labels[tumour])
    assert cleaned[40, 40, 40] == Label.NCR and np.array_equal(remove_thin_oedema(labels, 0), labels)


@pytest.mark.parametrize("radius", [2, 3, 5])
def test_thin_oedema_equals_scipy_morphology(radius: int):
    """Distance-transform opening and regrowth equal scipy's binary_opening and binary_dilation with a ball."""
    labels = rim_case()
    core = np.isin(labels, (Label.NCR, Label.ET))
    opened = ndimage.binary_opening(labels > 0, structure=ball(radius)) | core
    regrown = opened | ((labels > 0) & ndimage.binary_dilation(opened, structure=ball(radius - 1)))
    np.testing.assert_array_equal(remove_thin_oedema(labels, radius), np.where(regrown, labels, 0))
