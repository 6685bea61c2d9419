from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE, brain_volumes, write_case
from htcnns.cases import find_cases
from htcnns.errors import InputError
from htcnns.io import read_volume
from htcnns.labels import MODALITIES
from htcnns.validate import validate_case


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
]


@pytest.mark.parametrize(("make", "affine", "message"), BAD_T2F,
                         ids=["shape", "affine", "nan", "4d", "2d", "all-zero"])
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
