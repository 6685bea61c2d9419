import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE, brain_volumes, write_case
from htcnns.errors import InputError
from htcnns.inference.cases import find_cases
from htcnns.inference.io import read_volume
from htcnns.inference.pipeline import Settings, input_warnings, load_case
from htcnns.inference.validate import output_problem, validate_case
from htcnns.labels import MODALITIES


def load(folder: Path):
    [case] = find_cases(folder)
    return case, {m: read_volume(p, case.case_id) for m, p in case.paths.items()}


def test_valid_case_is_stacked_in_modality_order(case_dir: Path):
    case, volumes = load(case_dir)
    loaded = validate_case(case.case_id, volumes)
    assert loaded.image.shape == (4, 32, 36, 24)
    for channel, modality in enumerate(MODALITIES):
        assert np.array_equal(loaded.image[channel], volumes[modality].data)
    assert np.array_equal(loaded.affine, LPS_AFFINE)


def replace_t2f(folder: Path, data: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> None:
    nib.save(nib.Nifti1Image(data, affine), folder / f"{folder.name}-t2f.nii.gz")


BAD_T2F = [
    (lambda: np.ones((32, 36, 20), np.float32), LPS_AFFINE, r"t2f.nii.gz is \(32, 36, 20\) voxels .* share one grid"),
    (lambda: np.ones((32, 36, 24), np.float32), np.diag([1.0, 1, 1, 1]), r"affine of .*t2f.nii.gz differs"),
    (lambda: np.full((32, 36, 24), np.nan, np.float32), LPS_AFFINE, r"t2f.nii.gz contains NaN or infinite"),
    (lambda: np.ones((32, 36, 24, 2), np.float32), LPS_AFFINE, r"has shape \(32, 36, 24, 2\).* 3-D"),
    (lambda: np.ones((32, 36), np.float32), LPS_AFFINE, r"has shape \(32, 36\).* 3-D"),
    (lambda: np.zeros((32, 36, 24), np.float32), LPS_AFFINE, r"t2f.nii.gz is all zero"),
    (lambda: np.full((32, 36, 24), 7, np.float32), LPS_AFFINE, r"t2f.nii.gz holds the value 7 in every voxel"),
]


@pytest.mark.parametrize(("make", "affine", "message"), BAD_T2F,
                         ids=["shape", "affine", "nan", "4d", "2d", "all-zero", "constant"])
def test_bad_modality_gives_one_clear_sentence(case_dir: Path, make, affine, message):
    replace_t2f(case_dir, make(), affine)
    case, volumes = load(case_dir)
    with pytest.raises(InputError, match=message) as raised:
        validate_case(case.case_id, volumes)
    assert str(raised.value).startswith("BraTS-GLI-00002-000: ") and "\n" not in str(raised.value)


def test_affine_within_tolerance_is_accepted(case_dir: Path):
    nudged = LPS_AFFINE.copy()
    nudged[0, 3] += 1e-5
    replace_t2f(case_dir, brain_volumes()[3], nudged)
    case, volumes = load(case_dir)
    assert validate_case(case.case_id, volumes).image.shape[0] == 4


def test_trailing_singleton_axis_is_accepted(tmp_path: Path):
    folder = write_case(tmp_path / "c", "C", brain_volumes((12, 14, 10))[..., None])
    case, volumes = load(folder)
    assert validate_case(case.case_id, volumes).image.shape == (4, 12, 14, 10)


def save_with_singular_affine(data: np.ndarray, path: Path) -> None:
    """A header whose sform (the one nibabel uses) maps every voxel to one point; no qform."""
    header = nib.Nifti1Header()
    header["sform_code"], header["qform_code"] = 1, 0
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = 0
    nib.save(nib.Nifti1Image(data, None, header), path)


@pytest.mark.parametrize("modality", ["t1c", "t2f"])
def test_singular_affine_is_named_before_any_comparison(case_dir: Path, modality: str):
    save_with_singular_affine(brain_volumes()[1], case_dir / f"{case_dir.name}-{modality}.nii.gz")
    case, volumes = load(case_dir)
    with pytest.raises(InputError, match=rf"affine of .*-{modality}.nii.gz is singular or not finite"):
        validate_case(case.case_id, volumes)


def write_output(path: Path, labels: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    nib.save(nib.Nifti1Image(labels, affine), path)
    return path


LABELS = {0, 1, 2, 3}


def test_valid_output_is_kept(case_dir: Path, tmp_path: Path):
    [case] = find_cases(case_dir)
    labels = np.zeros((32, 36, 24), np.uint8)
    labels[10:12, 10:12, 10:12] = 3
    assert output_problem(write_output(tmp_path / "o.nii.gz", labels), case.paths, LABELS) == ""


BAD_OUTPUTS = [
    (lambda p: p.write_bytes(b"\x1f\x8b truncated"), "cannot be read"),
    (lambda p: write_output(p, np.zeros((32, 36, 20), np.uint8)), r"not uint8 \(32, 36, 24\)"),
    (lambda p: write_output(p, np.zeros((32, 36, 24), np.int16)), "it is int16"),
    (lambda p: write_output(p, np.zeros((32, 36, 24), np.uint8), np.eye(4)), "affine differs"),
    (lambda p: write_output(p, np.full((32, 36, 24), 4, np.uint8)), r"values \[4\] outside the labels"),
    (lambda p: p.symlink_to(p.parent / "elsewhere.nii.gz"), "not a regular file"),
]


@pytest.mark.parametrize(("make", "problem"), BAD_OUTPUTS,
                         ids=["truncated", "shape", "dtype", "affine", "labels", "link"])
def test_bad_output_is_not_kept(case_dir: Path, tmp_path: Path, make, problem):
    [case] = find_cases(case_dir)
    path = tmp_path / "o.nii.gz"
    make(path)
    assert re.search(problem, output_problem(path, case.paths, LABELS))


def test_output_older_than_an_input_is_not_kept(case_dir: Path, tmp_path: Path):
    [case] = find_cases(case_dir)
    path = write_output(tmp_path / "o.nii.gz", np.zeros((32, 36, 24), np.uint8))
    os.utime(path, (1, 1))
    assert output_problem(path, case.paths, LABELS) == "an input file is newer than it"



def test_scans_that_do_not_look_like_brats_space_are_named(tmp_path: Path):
    """Thick slices, a whole-head field of view and a background that is not 0: one clause each."""
    assert load_case(find_cases(write_case(tmp_path / "ok", "OK-1", brain_volumes()))[0]).warnings == ()
    thick = np.diag([0.9, 0.9, 5.5, 1.0])
    [case] = find_cases(write_case(tmp_path / "thick", "THICK-1", brain_volumes((40, 40, 26)), thick))
    assert load_case(case).warnings == ("THICK-1: THICK-1-t1c.nii.gz may not be in BraTS space: its voxels are "
                                        "0.9 x 0.9 x 5.5 mm, not about 1 mm isotropic",)
    head = brain_volumes((64, 64, 40)) + 5.0  # a background of 5 everywhere: the skull and air still on
    [case] = find_cases(write_case(tmp_path / "head", "HEAD-1", head, np.diag([5.0, 5.0, 5.0, 1.0])))
    ready = load_case(case)
    assert len(ready.warnings) == 3 and "field of view (320 x 320 x 200 mm)" in ready.warnings[1]
    assert "only 0 % of its voxels are 0" in ready.warnings[2]
    assert input_warnings(ready, Settings()) == ready.warnings
    with pytest.raises(InputError, match=r"refused \(--strict-input\): the networks expect BraTS-preprocessed"):
        input_warnings(ready, Settings(strict_input=True))
