"""End to end through segment_folder with tiny random models; bundled-model runs on the phantom and real case."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE, brain_volumes, require_real_case, write_case
from htcnns.fuse import FusionMethod
from htcnns.labels import regions_from_labels
from htcnns.pipeline import LabelConvention, Settings, default_models_root, load_models, segment_folder


def assert_valid_output(path: Path, reference: Path, allowed: set[int]) -> np.ndarray:
    written, source = nib.load(path), nib.load(reference)
    labels = np.asarray(written.dataobj)
    assert written.get_data_dtype() == np.uint8
    assert labels.shape == source.shape[:3]
    assert np.allclose(written.affine, source.affine)
    assert set(np.unique(labels)) <= allowed
    regions = regions_from_labels(np.where(labels == 4, 3, labels))
    assert not (regions[1] & ~regions[0]).any() and not (regions[2] & ~regions[1]).any()
    return labels


@pytest.mark.parametrize("fusion", list(FusionMethod))
def test_folder_with_good_and_broken_cases(tmp_path: Path, tiny_models: Path, fusion: FusionMethod):
    inputs = tmp_path / "in"
    write_case(inputs / "GOOD-00001-000", "GOOD-00001-000", brain_volumes())
    broken = write_case(inputs / "BAD-00002-000", "BAD-00002-000", brain_volumes())
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), LPS_AFFINE), broken / "BAD-00002-000-t2w.nii.gz")
    results = segment_folder(inputs, tmp_path / "out", load_models(tiny_models, "cpu"), Settings(fusion=fusion))
    by_id = {r.case_id: r for r in results}
    assert by_id["GOOD-00001-000"].ok and not by_id["BAD-00002-000"].ok
    assert "BAD-00002-000-t2w.nii.gz is (10, 10, 10) voxels" in by_id["BAD-00002-000"].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["GOOD-00001-000.nii.gz"]
    assert_valid_output(tmp_path / "out" / "GOOD-00001-000.nii.gz",
                        inputs / "GOOD-00001-000" / "GOOD-00001-000-t1c.nii.gz", {0, 1, 2, 3})


def bundled_models():
    root = default_models_root()
    if not any(root.glob("*/manifest.json")):
        pytest.skip(f"no bundled models in {root}")
    return load_models(root, "cpu")


@pytest.mark.slow
def test_real_case_in_2023_and_2021_names(tmp_path: Path):
    real = require_real_case()
    renamed = tmp_path / "in2021" / "BraTS2021_00001"
    renamed.mkdir(parents=True)
    for source, target in [("t1n", "t1"), ("t1c", "t1ce"), ("t2w", "t2"), ("t2f", "flair")]:
        shutil.copy(real / f"BraTS-GLI-00001-000-{source}.nii.gz", renamed / f"BraTS2021_00001_{target}.nii.gz")
    models = bundled_models()
    [r2023] = segment_folder(real, tmp_path / "out2023", models, Settings())
    [r2021] = segment_folder(renamed.parent, tmp_path / "out2021", models,
                             Settings(labels=LabelConvention.BRATS2021))
    assert r2023.ok and r2021.ok, (r2023.error, r2021.error)
    reference = real / "BraTS-GLI-00001-000-t1c.nii.gz"
    a = assert_valid_output(r2023.output, reference, {0, 1, 2, 3})
    b = assert_valid_output(r2021.output, reference, {0, 1, 2, 4})
    assert np.array_equal(np.where(b == 4, 3, b), a)
