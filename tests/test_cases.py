import os
from pathlib import Path

import pytest

from conftest import brain_volumes, write_case
from htcnns.inference.cases import case_id_problem, display_id, find_cases, parse_name


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


def test_links_inside_are_followed_links_outside_are_refused(tmp_path: Path):
    image = brain_volumes((12, 14, 10))
    outside = write_case(tmp_path / "outside", "ELSEWHERE", image)
    inside = write_case(tmp_path / "in" / "IN", "IN", image)
    (inside / "IN-t2f.nii.gz").rename(tmp_path / "in" / "real-t2f-file.nii.gz")
    (inside / "IN-t2f.nii.gz").symlink_to(tmp_path / "in" / "real-t2f-file.nii.gz")
    escaped = write_case(tmp_path / "in" / "OUT", "OUT", image)
    (escaped / "OUT-t2f.nii.gz").unlink()
    (escaped / "OUT-t2f.nii.gz").symlink_to(outside / "ELSEWHERE-t2f.nii.gz")
    (tmp_path / "in" / "linked-folder").symlink_to(outside)
    cases = {c.case_id: c for c in find_cases(tmp_path / "in")}
    assert sorted(cases) == ["IN", "OUT"]  # the linked folder is not entered
    assert not cases["IN"].problem
    assert cases["OUT"].problem.startswith("OUT-t2f.nii.gz is a link to ") and "outside the input folder" in \
        cases["OUT"].problem


def test_broken_links_and_special_files_are_reported(tmp_path: Path):
    folder = write_case(tmp_path / "A", "A", brain_volumes((12, 14, 10)))
    (folder / "A-t1n.nii.gz").unlink()
    (folder / "A-t1n.nii.gz").symlink_to(folder / "nowhere.nii.gz")
    folder = write_case(tmp_path / "B", "B", brain_volumes((12, 14, 10)))
    (folder / "B-t1n.nii.gz").unlink()
    os.mkfifo(folder / "B-t1n.nii.gz")
    broken, fifo = find_cases(tmp_path)
    assert broken.problem == "A-t1n.nii.gz is a broken link"
    assert fifo.problem == "B-t1n.nii.gz is not a regular file (a folder, pipe or device); put the image file there"


@pytest.mark.parametrize(("case_id", "safe"), [("BraTS-GLI-00001-000", True), ("Case with spaces", True),
                                                ("Fall-Ü-脳", True), ("..", False), (".hidden", False),
                                                ("a\\b", False), ("line\nbreak", False)],
                         ids=["brats", "spaces", "non-ascii", "dotdot", "hidden", "backslash", "newline"])
def test_case_ids_must_name_a_plain_output_file(tmp_path: Path, case_id: str, safe: bool):
    write_case(tmp_path, case_id, brain_volumes((12, 14, 10)))
    [case] = find_cases(tmp_path)
    assert case.case_id == case_id and (case.problem == "") == safe
    assert case.problem == case_id_problem(case_id)
    assert "\n" not in display_id(case_id)
