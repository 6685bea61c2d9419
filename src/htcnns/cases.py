"""Find the cases in a folder by their BraTS 2023 or BraTS 2021 file names."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from htcnns.labels import MODALITIES

_BRATS2023 = re.compile(r"^(?P<case>.+)-(?P<mod>t1n|t1c|t2w|t2f)\.nii(\.gz)?$")
_BRATS2021 = re.compile(r"^(?P<case>.+)_(?P<mod>t1|t1ce|t2|flair)\.nii(\.gz)?$")
_FROM_2021 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


@dataclass(frozen=True)
class Case:
    """The four modality files of one case.

    case_id: the file-name stem shared by the four files (``BraTS-GLI-00001-000``, ``BraTS2021_00000``).
    paths: modality (MODALITIES spelling) -> file; complete only when ``problem`` is empty.
    problem: why the case cannot run (a missing or duplicated modality), or "".
    """

    case_id: str
    paths: Mapping[str, Path] = field(default_factory=dict)
    problem: str = ""


def parse_name(name: str) -> tuple[str, str] | None:
    """Case id and modality of a BraTS file name, or None for any other file.

    >>> parse_name("BraTS2021_00000_t1ce.nii.gz")
    ('BraTS2021_00000', 't1c')
    """
    match = _BRATS2023.match(name)
    if match:
        return match["case"], match["mod"]
    match = _BRATS2021.match(name)
    if match:
        return match["case"], _FROM_2021[match["mod"]]
    return None


def find_cases(root: Path) -> list[Case]:
    """Every case under ``root``, in case folders or as flat files, sorted by case id.

    Files that are not BraTS modality images (label maps, notes) are ignored. A case with a missing or
    duplicated modality is returned with ``problem`` set, so the caller can report it and go on.
    """
    found: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.nii*")):
        parsed = parse_name(path.name)
        if parsed and path.is_file():
            found[parsed[0]][parsed[1]].append(path)
    return [_make_case(case_id, found[case_id]) for case_id in sorted(found)]


def _make_case(case_id: str, files: Mapping[str, list[Path]]) -> Case:
    missing = [mod for mod in MODALITIES if mod not in files]
    if missing:
        return Case(case_id, problem=f"missing modality {', '.join(missing)} (need {', '.join(MODALITIES)})")
    duplicated = [mod for mod in MODALITIES if len(files[mod]) > 1]
    if duplicated:
        names = ", ".join(p.name for mod in duplicated for p in files[mod])
        return Case(case_id, problem=f"more than one file for {', '.join(duplicated)}: {names}")
    return Case(case_id, {mod: files[mod][0] for mod in MODALITIES})
