"""Training on folders of real labelled cases: the loader on real files, refusals by name, folds by case, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE, brain_volumes, write_case
from htcnns.errors import InputError, SettingsError
from htcnns.labels import Label
from htcnns.training.command import TrainConfig, split_data, train
from htcnns.training.config import source_weights
from htcnns.training.real import (
    brats2023_labels,
    find_labelled_cases,
    load_real_case,
    load_real_cases,
    split_cases,
)
from htcnns.weights import load_model

REAL_LABELLED = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats-real-labelled"
SHAPE = (32, 36, 24)


def tumour_labels(et: int = 3, dtype: type = np.uint8) -> np.ndarray:
    labels = np.zeros(SHAPE, dtype)
    labels[10:20, 12:24, 6:16] = 2
    labels[12:18, 14:22, 8:14] = 1
    labels[13:17, 15:20, 9:13] = et
    return labels


def labelled_case(root: Path, case_id: str, labels: np.ndarray | None, naming: str = "brats2023",
                  affine: np.ndarray = LPS_AFFINE, seed: int = 0) -> Path:
    """A tiny labelled case written as real NIfTI files; ``labels`` None writes no label map."""
    folder = write_case(root / case_id, case_id, brain_volumes(SHAPE, seed), naming=naming)
    if labels is not None:
        separator = "-" if naming == "brats2023" else "_"
        nib.save(nib.Nifti1Image(labels, affine), folder / f"{case_id}{separator}seg.nii.gz")
    return folder


def test_both_namings_and_label_conventions_load(tmp_path: Path):
    labelled_case(tmp_path, "BraTS-GLI-00100-000", tumour_labels(3, np.float32))
    labelled_case(tmp_path, "BraTS2021_00100", tumour_labels(4), naming="brats2021", seed=1)
    cases = load_real_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS-GLI-00100-000", "BraTS2021_00100"]
    for case in cases:
        assert case.labels.dtype == np.uint8 and set(np.unique(case.labels)) == {0, 1, 2, 3}
        assert case.prepared.image.shape[0] == 4 and case.labels.shape == SHAPE
    assert np.array_equal(cases[0].labels, cases[1].labels)


def test_bad_training_cases_are_refused_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    labelled_case(tmp_path, "GOOD-1", tumour_labels())
    labelled_case(tmp_path, "NOLABEL-2", None)
    labelled_case(tmp_path, "GRID-3", tumour_labels(), affine=LPS_AFFINE * np.array([[2], [1], [1], [1]]))
    labelled_case(tmp_path, "VALUES-4", tumour_labels(5))
    mixed = tumour_labels(4)
    mixed[0, 0, 0] = 3
    labelled_case(tmp_path, "MIXED-5", mixed)
    found, refused = find_labelled_cases(tmp_path)
    assert [c.case_id for c in found] == ["GOOD-1", "GRID-3", "MIXED-5", "VALUES-4"]
    assert refused == ["NOLABEL-2: refused for training: no label map (<id>-seg.nii.gz or <id>_seg.nii.gz) beside "
                       "the images"]
    with caplog.at_level("INFO"):
        cases = load_real_cases(tmp_path)
    assert [c.case_id for c in cases] == ["GOOD-1"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("GRID-3" in line and "another grid" in line for line in lines)
    assert any("VALUES-4" in line and "[0, 1, 2, 5]" in line for line in lines)
    assert any("MIXED-5" in line and "outside BraTS" in line for line in lines)
    assert any("using 1 labelled case(s), refused 4" in line for line in lines)


def test_label_values_are_checked():
    assert brats2023_labels(np.array([0.0, 1.0, 2.0, 4.0]), "x").tolist() == [0, 1, 2, Label.ET]
    with pytest.raises(InputError, match="non-integer"):
        brats2023_labels(np.array([0.0, 1.5]), "x")
    with pytest.raises(InputError, match="no usable labelled case"):
        load_real_cases(Path(__file__).parent)


def test_folds_split_by_case(tmp_path: Path):
    for j in range(5):
        labelled_case(tmp_path, f"CASE-{j}", tumour_labels(), seed=j)
    cases = load_real_cases(tmp_path)
    held = [split_cases(cases, 3, fold)[1] for fold in range(3)]
    assert sorted(c.case_id for fold in held for c in fold) == [f"CASE-{j}" for j in range(5)]
    train_cases, validation = split_cases(cases, 3, 1)
    assert {c.case_id for c in validation} == {"CASE-1", "CASE-4"} and len(train_cases) == 3
    assert split_cases(cases, 0, 0) == (cases, [])


def test_data_sources_and_weights():
    assert split_data(None) == ("phantoms", ())
    assert split_data(["/a", "synthseg", "/b"]) == ("synthseg", ("/a", "/b"))
    with pytest.raises(SettingsError, match="at most one generated kind"):
        split_data(["synthseg", "phantoms"])
    config = TrainConfig(architecture="unet", output="", data="synthseg", real_data=("/a",), data_weights=(3, 1))
    assert source_weights(config) == (0.75, 0.25)
    with pytest.raises(SettingsError, match="need 1 non-negative weights"):
        source_weights(TrainConfig(architecture="unet", output="", data="", real_data=("/a",), data_weights=(1, 1)))


def test_train_on_a_real_folder_with_folds(tmp_path: Path):
    for j in range(3):
        labelled_case(tmp_path / "data", f"CASE-{j}", tumour_labels(), seed=j)
    config = TrainConfig(architecture="unet", output=str(tmp_path / "model"), data="", real_data=(str(tmp_path /
                         "data"),), steps=2, patch_size=16, roi_size=32, threads=1, folds=3, fold=0,
                         checkpoint_every=0)
    manifest = train(config)
    assert manifest.provenance["validation_cases"] == ["CASE-0"]
    assert set(manifest.provenance["validation_dice_per_case"]["CASE-0"]) == {"WT", "TC", "ET"}
    assert "synthetic_validation_dice" not in manifest.provenance
    assert "CASE-1, CASE-2" in manifest.provenance["data"] and "BraTS data terms" in manifest.provenance["data"]
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    assert "real labelled BraTS scans" in card and "held-out real cases CASE-0" in card
    assert load_model(tmp_path / "model").manifest.sha256 == manifest.sha256


@pytest.mark.skipif(not REAL_LABELLED.is_dir(), reason="../shared/data/brats-real-labelled is absent")
def test_real_cases_of_both_namings_and_conventions_load():
    found, refused = find_labelled_cases(REAL_LABELLED)
    assert refused == [] and len(found) == 4
    for labelled in found:
        case = load_real_case(labelled)
        raw = np.asanyarray(nib.load(labelled.label_path).dataobj)
        assert set(np.unique(case.labels)) <= {0, 1, 2, 3}
        assert int((case.labels == 3).sum()) == int(np.isin(raw, (3, 4)).sum()) > 0
        assert int((case.labels > 0).sum()) == int((raw > 0).sum())


@pytest.mark.skipif(not REAL_LABELLED.is_dir(), reason="../shared/data/brats-real-labelled is absent")
def test_cli_trains_on_the_real_folder_and_segment_accepts_the_model(tmp_path: Path):
    htcnns = [sys.executable, "-m", "htcnns.cli"]
    done = subprocess.run([*htcnns, "train", "--data", str(REAL_LABELLED), "--architecture", "unet", "--output",
                           str(tmp_path / "models" / "unet"), "--steps", "2", "--patch-size", "32", "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "using 4 labelled case(s), refused 0" in done.stderr
    manifest = json.loads((tmp_path / "models" / "unet" / "manifest.json").read_text())
    assert "BraTS20_Training_001" in manifest["provenance"]["data"]
    small = write_case(tmp_path / "in" / "CASE-1", "CASE-1", brain_volumes())
    done = subprocess.run([*htcnns, "segment", "-i", str(small.parent), "-o", str(tmp_path / "out"), "--models",
                           str(tmp_path / "models"), "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert nib.load(tmp_path / "out" / "CASE-1.nii.gz").shape == brain_volumes().shape[1:]
