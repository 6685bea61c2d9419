"""``htcnns evaluate``: folder pairing, label conventions, JSON/CSV layout, errors."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from htcnns.errors import InputError
from htcnns.evaluation.evaluate import add_evaluate_arguments, pair_files, run_evaluate
from htcnns.evaluation.metrics import METRIC_NAMES, brats2023_metrics

SHAPE = (40, 40, 30)
AFFINE = np.diag([1.0, 1.5, 2.0, 1.0])


def tumour(shift: int = 0, et_value: int = 3) -> np.ndarray:
    """A nested edema / necrosis / enhancing box tumour, moved ``shift`` voxels along X."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[8 + shift:24 + shift, 10:26, 6:20] = 2
    labels[11 + shift:21 + shift, 13:23, 9:17] = et_value
    labels[14 + shift:18 + shift, 16:20, 11:15] = 1
    return labels


def save(labels: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), path)
    return path


def evaluate(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    args = parser.parse_args(list(argv))
    assert args.run is run_evaluate
    return args.run(args)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """References A (-seg), B (plain name, in a case folder), C (no prediction); predictions A, B and D (no ref)."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    save(tumour(), ref / "A-seg.nii.gz")
    save(np.zeros(SHAPE, np.float32), ref / "A-t1n.nii.gz")  # a modality image: not a reference
    save(tumour(), ref / "B" / "B.nii.gz")
    save(tumour(), ref / "C-seg.nii")
    save(tumour(shift=1), pred / "A.nii.gz")
    save(tumour(), pred / "B.nii.gz")
    save(tumour(), pred / "D.nii.gz")
    return pred, ref


def test_pairs_references_with_predictions_by_case_id(folders: tuple[Path, Path],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    pred, ref = folders
    with caplog.at_level(logging.WARNING):
        pairs = pair_files(pred, ref)
    assert [(p.case_id, p.reference.name, p.prediction and p.prediction.name) for p in pairs] == [
        ("A", "A-seg.nii.gz", "A.nii.gz"), ("B", "B.nii.gz", "B.nii.gz"), ("C", "C-seg.nii", None)]
    assert "D: prediction D.nii.gz has no reference" in caplog.text


def test_json_and_csv_layout(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred, ref = folders
    out_json, out_csv = tmp_path / "out" / "scores.json", tmp_path / "out" / "scores.csv"
    assert evaluate("--pred", str(pred), "--ref", str(ref), "--challenge", "BraTS-GLI",
                    "--json", str(out_json), "--csv", str(out_csv)) == 0

    report = json.loads(out_json.read_text())
    assert set(report) == {"cases", "summary", "missing_predictions"}
    assert report["missing_predictions"] == ["C"]
    assert list(report["cases"]) == ["A", "B", "C"]
    spacing = (1.0, 1.5, 2.0)
    assert report["cases"]["A"] == brats2023_metrics(tumour(shift=1), tumour(), spacing, "BraTS-GLI")
    assert report["cases"]["C"] == brats2023_metrics(np.zeros(SHAPE, np.uint8), tumour(), spacing, "BraTS-GLI")
    assert report["cases"]["B"]["ET"]["Legacy_Dice"] == 1.0
    assert report["cases"]["C"]["WT"]["Num_FN"] == 1
    for region in ("WT", "TC", "ET"):
        assert list(report["cases"]["A"][region]) == list(METRIC_NAMES)
        assert list(report["summary"][region]) == list(METRIC_NAMES)
        dice = [report["cases"][case][region]["Legacy_Dice"] for case in "ABC"]
        assert report["summary"][region]["Legacy_Dice"] == pytest.approx(
            {"mean": np.mean(dice), "std": np.std(dice), "median": np.median(dice)})

    with out_csv.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["case_id", "region", *METRIC_NAMES]
    assert [(row["case_id"], row["region"]) for row in rows] == [
        (case, region) for case in "ABC" for region in ("WT", "TC", "ET")]
    assert float(rows[0]["Legacy_HD95"]) == report["cases"]["A"]["WT"]["Legacy_HD95"]
    assert int(rows[0]["Num_TP"]) == report["cases"]["A"]["WT"]["Num_TP"]
    assert not [p.name for p in out_json.parent.iterdir() if p.name.startswith(".")]  # no temporary files left

    printed = capsys.readouterr().out
    assert "BraTS-GLI: 3 case(s), 1 without prediction" in printed
    assert "LesionWise_Score_HD95" in printed


def test_brats2021_labels_read_enhancing_tumour_as_4(tmp_path: Path) -> None:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    save(tumour(et_value=4), ref / "X-seg.nii.gz")
    save(tumour(shift=2, et_value=4), pred / "X.nii.gz")
    assert evaluate("--pred", str(pred), "--ref", str(ref), "--challenge", "BraTS-MET", "--labels", "brats2021",
                    "--json", str(tmp_path / "a.json")) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["cases"]["X"] == brats2023_metrics(tumour(shift=2), tumour(), (1.0, 1.5, 2.0), "BraTS-MET")
    assert report["cases"]["X"]["ET"]["Num_TP"] == 1


def test_shape_mismatch_is_one_clear_sentence(tmp_path: Path) -> None:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    save(tumour(), ref / "X-seg.nii.gz")
    save(np.zeros((40, 40, 31), np.uint8), pred / "X.nii.gz")
    with pytest.raises(InputError) as error:
        evaluate("--pred", str(pred), "--ref", str(ref), "--challenge", "BraTS-GLI")
    message = str(error.value)
    assert message.startswith("X: the prediction X.nii.gz has shape (40, 40, 31) but the reference X-seg.nii.gz")
    assert "\n" not in message


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="does not exist"):
        pair_files(tmp_path / "nowhere", tmp_path / "empty")
    with pytest.raises(InputError, match="no reference label maps"):
        pair_files(tmp_path / "empty", tmp_path / "empty")
    save(tumour(), tmp_path / "ref" / "Y-seg.nii.gz")
    save(tumour(), tmp_path / "ref" / "Y.nii.gz")
    with pytest.raises(InputError, match="two reference files"):
        pair_files(tmp_path / "empty", tmp_path / "ref")


def _cli_has_evaluate() -> bool:
    from htcnns.cli import build_parser

    return any(isinstance(action, argparse._SubParsersAction) and "evaluate" in action.choices
               for action in build_parser()._actions)


CLI_MISSING = pytest.mark.skipif(not _cli_has_evaluate(), reason="`htcnns evaluate` not registered in htcnns.cli yet")


@CLI_MISSING
def test_command_line(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    out = tmp_path / "cli.json"
    done = subprocess.run([sys.executable, "-m", "htcnns.cli", "evaluate", "--pred", str(pred), "--ref", str(ref),
                           "--challenge", "BraTS-PED", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "BraTS-PED: 3 case(s)" in done.stdout
    assert "C: no prediction" in done.stderr
    assert json.loads(out.read_text())["missing_predictions"] == ["C"]


@CLI_MISSING
def test_command_line_user_error_is_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from htcnns.cli import main

    with caplog.at_level(logging.ERROR):
        code = main(["evaluate", "--pred", str(tmp_path / "nowhere"), "--ref", str(tmp_path),
                     "--challenge", "BraTS-PED"])
    assert code == 2
    assert "does not exist" in caplog.text and "Traceback" not in caplog.text
