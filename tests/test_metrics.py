"""BraTS 2023 metrics: equal to the official code's values on the golden pairs, and right on hand-made cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from htcnns.evaluation.metrics import (
    HD95_PENALTY,
    METRIC_NAMES,
    Challenge,
    _dilate18,
    brats2023_metrics,
    neighbour_codes,
    robust_hausdorff,
    surfel_area_table,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "metrics_golden"
GOLDEN_PAIRS = sorted(p.name for p in (GOLDEN / "pairs").iterdir()) if (GOLDEN / "pairs").is_dir() else []


def within_tolerance(name: str, expected: float | int, got: float | int) -> bool:
    """The golden set's tolerances: counts exact, HD95 1e-3 mm, volume 1e-6 relative, the rest 1e-6."""
    if name.startswith("Num_"):
        return isinstance(got, int) and got == expected
    if name == "GT_Complete_Volume":
        return math.isclose(got, expected, rel_tol=1e-6, abs_tol=0.0)
    return abs(got - expected) <= (1e-3 if "HD95" in name else 1e-6)


@pytest.mark.parametrize("pair", GOLDEN_PAIRS or ["(absent)"])
def test_equals_official_brats2023_code_on_golden_pair(pair: str) -> None:
    if not GOLDEN_PAIRS:
        pytest.skip(f"golden metrics set not present at {GOLDEN}")
    expected = json.loads((GOLDEN / "expected_brats2023.json").read_text())[pair]
    prediction_image = nib.load(GOLDEN / "pairs" / pair / "pred.nii.gz")
    prediction = np.asarray(prediction_image.dataobj)
    reference = np.asarray(nib.load(GOLDEN / "pairs" / pair / "ref.nii.gz").dataobj)
    spacing = prediction_image.header.get_zooms()[:3]
    mismatches = []
    for challenge in Challenge:
        got = brats2023_metrics(prediction, reference, spacing, challenge)
        for region, names in expected[challenge.value].items():
            for name, value in names.items():
                result = got[region][name]
                if not within_tolerance(name, value, result):
                    mismatches.append(f"{challenge.value} {region} {name}: expected {value!r}, got {result!r}")
    assert not mismatches, f"{pair}: {len(mismatches)} mismatches\n" + "\n".join(mismatches)


def box(shape: tuple[int, int, int], *slices: slice) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[slices] = 1
    return mask


def test_challenge_parameters_and_names() -> None:
    assert [(c.value, c.dilation, c.volume_threshold) for c in Challenge] == [
        ("BraTS-GLI", 3, 50.0), ("BraTS-SSA", 3, 50.0), ("BraTS-MEN", 1, 50.0), ("BraTS-PED", 3, 50.0),
        ("BraTS-MET", 1, 2.0)]
    assert METRIC_NAMES == ("Num_TP", "Num_FP", "Num_FN", "Sensitivity", "Specificity", "Legacy_Dice",
                            "Legacy_HD95", "GT_Complete_Volume", "LesionWise_Score_Dice", "LesionWise_Score_HD95")
    with pytest.raises(ValueError):
        Challenge("BraTS-XYZ")


def test_empty_versus_empty_is_perfect() -> None:
    empty = np.zeros((20, 20, 20), np.uint8)
    for scores in brats2023_metrics(empty, empty, (1, 1, 1), "BraTS-GLI").values():
        assert scores == {"Num_TP": 0, "Num_FP": 0, "Num_FN": 0, "Sensitivity": 1.0, "Specificity": 1.0,
                          "Legacy_Dice": 1.0, "Legacy_HD95": 0.0, "GT_Complete_Volume": 0.0,
                          "LesionWise_Score_Dice": 1.0, "LesionWise_Score_HD95": 0.0}


def test_missed_lesion_scores_zero_and_penalty() -> None:
    reference = box((30, 30, 30), slice(5, 10), slice(5, 10), slice(5, 10)) * 2  # 125 voxels of edema
    scores = brats2023_metrics(np.zeros_like(reference), reference, (1, 1, 1), "BraTS-GLI")
    wt = scores["WT"]
    assert (wt["Num_TP"], wt["Num_FP"], wt["Num_FN"]) == (0, 0, 1)
    assert (wt["Legacy_Dice"], wt["Legacy_HD95"], wt["Sensitivity"]) == (0.0, HD95_PENALTY, 0.0)
    assert (wt["LesionWise_Score_Dice"], wt["LesionWise_Score_HD95"]) == (0.0, HD95_PENALTY)
    assert wt["GT_Complete_Volume"] == 125.0
    assert scores["TC"]["Num_FN"] == 0 and scores["TC"]["LesionWise_Score_Dice"] == 1.0  # no TC anywhere


def test_false_positive_of_any_size_halves_the_lesion_wise_scores() -> None:
    reference = box((40, 40, 30), slice(5, 11), slice(5, 11), slice(5, 11))
    prediction = reference.copy()
    prediction[30, 30, 20] = 1  # one voxel, far away
    wt = brats2023_metrics(prediction, reference, (1, 1, 1), "BraTS-GLI")["WT"]
    assert (wt["Num_TP"], wt["Num_FP"], wt["Num_FN"]) == (1, 1, 0)
    assert wt["LesionWise_Score_Dice"] == pytest.approx(0.5)
    assert wt["LesionWise_Score_HD95"] == pytest.approx(HD95_PENALTY / 2)
    assert wt["Legacy_Dice"] == pytest.approx(2 * 216 / (216 + 217))


def test_lesions_merge_through_the_challenge_dilation() -> None:
    """Two 64-voxel lesions 3 voxels apart: one lesion for GLI (d = 3), two for MEN (d = 1)."""
    reference = box((40, 30, 30), slice(5, 9), slice(5, 9), slice(5, 9)) | box(
        (40, 30, 30), slice(12, 16), slice(5, 9), slice(5, 9))
    prediction = box((40, 30, 30), slice(5, 9), slice(5, 9), slice(5, 9))
    gli = brats2023_metrics(prediction, reference, (1, 1, 1), "BraTS-GLI")["WT"]
    men = brats2023_metrics(prediction, reference, (1, 1, 1), "BraTS-MEN")["WT"]
    assert (gli["Num_TP"], gli["Num_FN"], gli["LesionWise_Score_Dice"]) == (1, 0, pytest.approx(2 * 64 / 192))
    assert (men["Num_TP"], men["Num_FN"], men["LesionWise_Score_Dice"]) == (1, 1, pytest.approx(0.5))
    assert men["LesionWise_Score_HD95"] == pytest.approx(HD95_PENALTY / 2)


def test_volume_threshold_is_in_cubic_millimetres() -> None:
    """A missed 31-voxel lesion is ignored at 1 mm (31 mm^3 <= 50) but counts at 1 x 1.5 x 3 mm (139.5 mm^3)."""
    reference = box((30, 30, 30), slice(2, 12), slice(2, 12), slice(2, 12))
    reference[20:22, 20:24, 20:24] = 1  # 32 voxels ...
    reference[21, 23, 23] = 0  # ... minus one: 31
    prediction = box((30, 30, 30), slice(2, 12), slice(2, 12), slice(2, 12))
    iso = brats2023_metrics(prediction, reference, (1.0, 1.0, 1.0), "BraTS-GLI")["WT"]
    aniso = brats2023_metrics(prediction, reference, (1.0, 1.5, 3.0), "BraTS-GLI")["WT"]
    assert (iso["Num_TP"], iso["Num_FN"], iso["LesionWise_Score_Dice"]) == (1, 0, 1.0)
    assert (aniso["Num_TP"], aniso["Num_FN"], aniso["LesionWise_Score_Dice"]) == (1, 1, 0.5)
    assert aniso["GT_Complete_Volume"] == pytest.approx(1031 * 4.5)


def test_hd95_of_shifted_boxes_is_the_shift_in_millimetres() -> None:
    """A 6^3 box shifted by 2 voxels along X: a quarter of the surface is 2 voxels away, so HD95 = 2 sx."""
    reference = box((30, 30, 30), slice(5, 11), slice(5, 11), slice(5, 11)).astype(bool)
    shifted = np.roll(reference, 2, axis=0)
    assert robust_hausdorff(reference, shifted, (1.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert robust_hausdorff(reference, shifted, (1.5, 0.7, 2.0)) == pytest.approx(3.0)
    assert robust_hausdorff(reference, reference, (1.5, 0.7, 2.0)) == 0.0
    assert brats2023_metrics(shifted.astype(np.uint8), reference.astype(np.uint8), (1.5, 0.7, 2.0),
                             "BraTS-GLI")["WT"]["Legacy_HD95"] == pytest.approx(3.0)


def test_hd95_ignores_a_small_bump_that_the_maximum_sees() -> None:
    """One voxel on a 10^3 box's face: its 4 outer corners hold 0.14 % of the surface, below the 5 % tail."""
    reference = box((20, 20, 20), slice(5, 15), slice(5, 15), slice(5, 15)).astype(bool)
    bumped = reference.copy()
    bumped[15, 10, 10] = True
    assert robust_hausdorff(reference, bumped, (2.0, 1.0, 1.0)) == 0.0
    assert robust_hausdorff(reference, bumped, (2.0, 1.0, 1.0), percent=100) == pytest.approx(2.0)


def test_hd95_does_not_depend_on_axis_direction() -> None:
    rng = np.random.default_rng(0)
    a = ndimage.binary_dilation(rng.random((14, 12, 10)) > 0.93)
    b = ndimage.binary_dilation(rng.random((14, 12, 10)) > 0.93)
    spacing = (0.8, 1.3, 2.1)
    expected = robust_hausdorff(a, b, spacing)
    for axes in ((0,), (1,), (2,), (0, 1, 2)):
        assert robust_hausdorff(np.flip(a, axes), np.flip(b, axes), spacing) == pytest.approx(expected, abs=1e-12)


def test_surfel_areas_are_marching_cubes_areas() -> None:
    unit = surfel_area_table((1.0, 1.0, 1.0))
    assert unit[0] == unit[255] == 0.0
    assert unit[1] == pytest.approx(math.sqrt(3) / 8)  # a corner cut off: one triangle
    assert unit[0b11] == pytest.approx(math.sqrt(2) / 2)  # an edge: a 1 x sqrt(1/2) rectangle
    assert unit[0b1111] == pytest.approx(1.0)  # a face: a unit square
    assert np.allclose(unit, unit[::-1])  # a code and its complement have one surface
    sx, sy, sz = 1.0, 1.5, 3.0
    codes = neighbour_codes(np.ones((1, 1, 1), bool))  # one voxel: an octahedron of 8 corner triangles
    octahedron = math.hypot(sy * sz, sx * sz, sx * sy)
    assert surfel_area_table((sx, sy, sz))[codes[(codes != 0) & (codes != 255)]].sum() == pytest.approx(octahedron)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_dilation_equals_scipy_18_connected(iterations: int) -> None:
    mask = np.random.default_rng(iterations).random((17, 13, 11)) > 0.97
    mask[0, 5, 5] = mask[-1, -1, -1] = True  # borders count as empty
    expected = ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 2), iterations=iterations)
    assert np.array_equal(_dilate18(mask, iterations), expected)


def test_float_labels_and_other_values_follow_the_regions() -> None:
    reference = np.zeros((20, 20, 20), np.uint8)
    reference[4:10, 4:10, 4:10] = 2
    reference[6:8, 6:8, 6:8] = 3
    prediction = reference.copy()
    prediction[6:8, 6:8, 6:8] = 4  # not a BraTS 2023 label: background everywhere
    as_uint8 = brats2023_metrics(prediction, reference, (1, 1, 1), "BraTS-MET")
    assert as_uint8 == brats2023_metrics(prediction.astype(np.float32), reference.astype(np.float64), (1, 1, 1),
                                         "BraTS-MET")
    assert as_uint8["ET"]["Num_FN"] == 1 and as_uint8["ET"]["Legacy_Dice"] == 0.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        brats2023_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1), "BraTS-GLI")
