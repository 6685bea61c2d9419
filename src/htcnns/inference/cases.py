"""Find the cases in a folder by their BraTS 2023 or BraTS 2021 file names.

Links are followed only to files inside the input folder, and a case id must make a plain file name inside the
output folder; a case that breaks either rule is returned with ``problem`` set, never silently dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from htcnns.labels import MODALITIES

_BRATS2023 = re.compile(r"(?P<case>.+)-(?P<mod>t1n|t1c|t2w|t2f)\.nii(\.gz)?", re.DOTALL)
_BRATS2021 = re.compile(r"(?P<case>.+)_(?P<mod>t1|t1ce|t2|flair)\.nii(\.gz)?", re.DOTALL)
_FROM_2021 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


@dataclass(frozen=True)
class Case:
    """The four modality files of one case.

    case_id: the file-name stem shared by the four files (``BraTS-GLI-00001-000``, ``BraTS2021_00000``).
    paths: modality (MODALITIES spelling) -> file; complete only when ``problem`` is empty.
    problem: why the case cannot run (a missing or duplicated modality, a link out of the input folder, a case
        id that cannot name an output file), or "".
    """

    case_id: str
    paths: Mapping[str, Path] = field(default_factory=dict)
    problem: str = ""


def parse_name(name: str) -> tuple[str, str] | None:
    """Case id and modality of a BraTS file name, or None for any other file.

    >>> parse_name("BraTS2021_00000_t1ce.nii.gz")
    ('BraTS2021_00000', 't1c')
    """
    match = _BRATS2023.fullmatch(name)
    if match:
        return match["case"], match["mod"]
    match = _BRATS2021.fullmatch(name)
    if match:
        return match["case"], _FROM_2021[match["mod"]]
    return None


def display_id(case_id: str) -> str:
    """The case id as printed in messages: quoted with escapes when it holds control characters."""
    return repr(case_id) if _has_control(case_id) else case_id


def case_id_problem(case_id: str) -> str:
    """Why ``case_id`` cannot name the output file ``<case-id>.nii.gz`` inside the output folder, or ""."""
    if case_id.startswith("."):
        return "the case id starts with '.', so its output name would be hidden or point out of the output folder; "\
               "rename the files"
    if "/" in case_id or "\\" in case_id or _has_control(case_id):
        return "the case id holds a slash, a backslash or a control character, which cannot name an output file; "\
               "rename the files"
    return ""


def file_problem(path: Path, real_root: Path) -> str:
    """Why ``path`` cannot be read as a modality file, or "".

    Args:
        real_root: the input folder with every link resolved; links are followed only to files inside it.
    """
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return f"{path.name} is a broken link"
    if not target.is_relative_to(real_root):
        return f"{path.name} is a link to {target}, outside the input folder; links out of the input folder "\
               "are not followed, copy the file in instead"
    if not target.is_file():
        return f"{path.name} is not a regular file (a folder, pipe or device); put the image file there"
    return ""


def find_cases(root: Path) -> list[Case]:
    """Every case under ``root``, in case folders or as flat files, sorted by case id.

    Files that are not BraTS modality images (label maps, notes) are ignored; links to folders are not entered.
    A case with a missing or duplicated modality, a file that cannot be used (see ``file_problem``) or an unsafe
    id is returned with ``problem`` set, so the caller can report it and go on.
    """
    real_root = root.resolve()
    files: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    problems: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.nii*")):
        parsed = parse_name(path.name)
        if parsed is None:
            continue
        problem = file_problem(path, real_root)
        if problem:
            problems[parsed[0]].append(problem)
        else:
            files[parsed[0]][parsed[1]].append(path)
    return [_make_case(case_id, files[case_id], problems[case_id]) for case_id in sorted(set(files) | set(problems))]


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def _make_case(case_id: str, files: Mapping[str, list[Path]], problems: Sequence[str]) -> Case:
    id_problem = case_id_problem(case_id)
    if id_problem or problems:
        return Case(case_id, problem=id_problem or "; ".join(problems))
    missing = [mod for mod in MODALITIES if mod not in files]
    if missing:
        return Case(case_id, problem=f"missing modality {', '.join(missing)} (need {', '.join(MODALITIES)})")
    duplicated = [mod for mod in MODALITIES if len(files[mod]) > 1]
    if duplicated:
        names = ", ".join(p.name for mod in duplicated for p in files[mod])
        return Case(case_id, problem=f"more than one file for {', '.join(duplicated)}: {names}")
    return Case(case_id, {mod: files[mod][0] for mod in MODALITIES})
