from pathlib import Path

import pytest

from conftest import brain_volumes, write_case
from htcnns.cases import find_cases, parse_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BraTS-GLI-00001-000-t1c.nii.gz", ("BraTS-GLI-00001-000", "t1c")),
        ("BraTS-PED-00002-000-t2f.nii", ("BraTS-PED-00002-000", "t2f")),
        ("BraTS2021_00000_t1.nii.gz", ("BraTS2021_00000", "t1n")),
        ("BraTS2021_00000_t1ce.nii.gz", ("BraTS2021_00000", "t1c")),
        ("BraTS2021_00000_flair.nii", ("BraTS2021_00000", "t2f")),
        ("BraTS2021_00000_t2.nii.gz", ("BraTS2021_00000", "t2w")),
        ("BraTS-GLI-00001-000-seg.nii.gz", None),
        ("notes.txt", None),
    ],
    ids=["2023-gz", "2023-nii", "2021-t1", "2021-t1ce", "2021-flair-nii", "2021-t2", "seg-ignored", "other"],
)
def test_parse_name(name, expected):
    assert parse_name(name) == expected


def test_finds_folder_flat_and_2021_cases(tmp_path: Path):
    image = brain_volumes((12, 14, 10))
    write_case(tmp_path / "BraTS-GLI-00001-000", "BraTS-GLI-00001-000", image)
    write_case(tmp_path, "BraTS-MET-00003-000", image, suffix=".nii")
    write_case(tmp_path / "nested" / "deeper", "BraTS2021_00007", image, naming="brats2021")
    (tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz").write_bytes(b"ignored")
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS-GLI-00001-000", "BraTS-MET-00003-000", "BraTS2021_00007"]
    assert all(not c.problem and sorted(c.paths) == ["t1c", "t1n", "t2f", "t2w"] for c in cases)
    assert cases[2].paths["t1c"].name == "BraTS2021_00007_t1ce.nii.gz"


def test_missing_and_duplicate_modalities_are_reported(tmp_path: Path):
    image = brain_volumes((12, 14, 10))
    write_case(tmp_path / "a", "CASE-A", image)
    (tmp_path / "a" / "CASE-A-t2f.nii.gz").unlink()
    write_case(tmp_path / "b", "CASE-B", image)
    write_case(tmp_path / "b", "CASE-B", image, suffix=".nii")
    missing, duplicated = find_cases(tmp_path)
    assert missing.problem == "missing modality t2f (need t1n, t1c, t2w, t2f)"
    assert duplicated.problem.startswith("more than one file for t1n, t1c, t2w, t2f")
