"""``htcnns fuse`` as users run it: real files, a real subprocess, SimpleITK as the multi-label reference."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from conftest import LPS_AFFINE
from htcnns.cli import main
from htcnns.inference.fuse_command import multilabel_staple
from htcnns.labels import Label


def nested_map(shift: int = 0, et_value: int = Label.ET) -> np.ndarray:
    """uint8 (20, 22, 16): ED box, NCR core, ET centre, shifted along x by ``shift``."""
    labels = np.zeros((20, 22, 16), np.uint8)
    labels[4 + shift:15 + shift, 5:17, 3:13] = Label.ED
    labels[6 + shift:13 + shift, 7:15, 5:11] = Label.NCR
    labels[8 + shift:11 + shift, 9:13, 6:10] = et_value
    return labels


def save(labels: np.ndarray, path: Path, affine: np.ndarray = LPS_AFFINE, dtype=np.uint8) -> Path:
    nib.save(nib.Nifti1Image(labels.astype(dtype), affine), path)
    return path


def htcnns_fuse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "htcnns.cli", "fuse", *args], capture_output=True, text=True,
                          timeout=120)


def test_staple_fuses_2021_and_2023_maps_on_the_first_grid_and_prints_raters(tmp_path: Path):
    maps = [save(nested_map(0), tmp_path / "a.nii.gz"),
            save(nested_map(0, et_value=4), tmp_path / "b_2021.nii.gz", dtype=np.float64),
            save(nested_map(2), tmp_path / "c.nii.gz", dtype=np.int16)]
    result = htcnns_fuse("-o", str(tmp_path / "out" / "fused.nii.gz"), *map(str, maps))
    assert result.returncode == 0, result.stderr
    fused = nib.load(tmp_path / "out" / "fused.nii.gz")
    assert np.allclose(fused.affine, LPS_AFFINE) and fused.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(fused.dataobj), nested_map(0))  # two agreeing raters outvote the shifted one
    rows = result.stdout.strip().splitlines()
    assert rows[0].split()[:3] == ["rater", "WT", "sens"] and len(rows) == 4
    assert rows[3].startswith("c.nii.gz") and float(rows[3].split()[1]) < float(rows[1].split()[1])


def test_brats2021_output_writes_et_as_4(tmp_path: Path):
    maps = [save(nested_map(0), tmp_path / f"{name}.nii.gz") for name in "ab"]
    result = htcnns_fuse("--method", "majority", "--labels", "brats2021", "-o", str(tmp_path / "f.nii.gz"),
                         *map(str, maps))
    assert result.returncode == 0, result.stderr
    assert set(np.unique(np.asarray(nib.load(tmp_path / "f.nii.gz").dataobj))) == {0, 1, 2, 4}


def test_maps_on_different_grids_are_refused_in_one_sentence(tmp_path: Path, caplog):
    moved = LPS_AFFINE.copy()
    moved[0, 3] += 5
    maps = [save(nested_map(), tmp_path / "a.nii.gz"), save(nested_map(), tmp_path / "b.nii.gz", moved)]
    assert main(["fuse", "-o", str(tmp_path / "f.nii.gz"), *map(str, maps)]) == 2
    assert "b.nii.gz and a.nii.gz have different affines" in caplog.text
    assert not (tmp_path / "f.nii.gz").exists()


def test_non_label_values_and_a_single_map_are_refused(tmp_path: Path, caplog):
    odd = nested_map()
    odd[0, 0, 0] = 7
    good, bad = save(nested_map(), tmp_path / "good.nii.gz"), save(odd, tmp_path / "bad.nii.gz")
    assert main(["fuse", "-o", str(tmp_path / "f.nii.gz"), str(good), str(bad)]) == 2
    assert "bad.nii.gz: values 7 are not BraTS labels" in caplog.text
    assert main(["fuse", "-o", str(tmp_path / "f.nii.gz"), str(good)]) == 2
    assert "at least 2 label maps" in caplog.text


def test_multilabel_staple_sets_undecided_voxels_to_background_not_to_a_label(tmp_path: Path):
    first, second = np.zeros((20, 22, 16), np.uint8), np.zeros((20, 22, 16), np.uint8)
    first[2:8, 2:8, 2:8], first[10:16, 10:16, 8:14] = Label.NCR, Label.ED   # the raters swap labels: every
    second[2:8, 2:8, 2:8], second[10:16, 10:16, 8:14] = Label.ED, Label.NCR  # tumour voxel is undecided
    default = sitk.MultiLabelSTAPLEImageFilter()  # SimpleITK marks undecided voxels max label + 1 = 3, i.e. "ET"
    expected = sitk.GetArrayFromImage(default.Execute([sitk.GetImageFromArray(m) for m in (first, second)]))
    assert np.array_equal(expected == 3, (first > 0))
    maps = [save(first, tmp_path / "a.nii.gz"), save(second, tmp_path / "b.nii.gz")]
    result = htcnns_fuse("--method", "multilabel-staple", "-o", str(tmp_path / "f.nii.gz"), *map(str, maps))
    assert result.returncode == 0, result.stderr
    assert not np.asarray(nib.load(tmp_path / "f.nii.gz").dataobj).any()


def test_multilabel_staple_equals_simpleitk_where_raters_decide():
    maps = [nested_map(0), nested_map(1), nested_map(0)]
    default = sitk.MultiLabelSTAPLEImageFilter()
    expected = sitk.GetArrayFromImage(default.Execute([sitk.GetImageFromArray(m) for m in maps]))
    assert np.array_equal(multilabel_staple(maps), expected)
