"""Labelled real cases for training: found the way ``segment`` finds cases, plus a ``-seg`` / ``_seg`` label map.

A case is refused (one line naming it, the run goes on) when its label map is missing or duplicated, cannot be
read, lies on another grid than its t1c, or holds values outside BraTS 2021 (0/1/2/4) or 2023 (0/1/2/3) labels.
Each accepted case is read, validated and preprocessed once (the inference path) and kept in memory as a Sample.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from htcnns.errors import InputError
from htcnns.inference.cases import Case, file_problem, find_cases
from htcnns.inference.io import read_volume
from htcnns.inference.preprocess import Prepared, preprocess, to_prepared_grid
from htcnns.inference.validate import AFFINE_TOLERANCE_MM, validate_case
from htcnns.labels import BRATS2021_ET, MODALITIES, Label, regions_from_labels

log = logging.getLogger(__name__)

_LABEL_NAME = re.compile(r"(?P<case>.+)[-_]seg\.nii(\.gz)?", re.DOTALL)
BRATS2023_VALUES = frozenset({0, 1, 2, 3})
BRATS2021_VALUES = frozenset({0, 1, 2, 4})


@dataclass(frozen=True)
class LabelledCase:
    """A case's four modality files and its label map file."""

    case: Case
    label_path: Path

    @property
    def case_id(self) -> str:
        return self.case.case_id


@dataclass(frozen=True)
class RealCase:
    """A labelled case ready for training and validation.

    prepared: the inference preprocessing of its four modalities (image float32 (4, x, y, z)).
    labels: uint8 (X, Y, Z) BraTS 2023 labels on the case's own grid.
    """

    case_id: str
    prepared: Prepared
    labels: np.ndarray


def label_files(root: Path) -> dict[str, list[Path]]:
    """case id -> label map files (``<id>-seg.nii.gz`` or ``<id>_seg.nii.gz``) under ``root``."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*seg.nii*")):
        match = _LABEL_NAME.fullmatch(path.name)
        if match:
            found.setdefault(match["case"], []).append(path)
    return found


def find_labelled_cases(root: Path) -> tuple[list[LabelledCase], list[str]]:
    """The labelled cases under ``root`` (sorted by case id) and one refusal line per case that cannot train."""
    if not root.is_dir():
        raise InputError(f"training data folder {root} does not exist or is not a folder")
    labels, real_root = label_files(root), root.resolve()
    found, refused = [], []
    for case in find_cases(root):
        paths = labels.get(case.case_id, [])
        problem = case.problem or _label_file_problem(paths, real_root)
        if problem:
            refused.append(f"{case.case_id}: refused for training: {problem}")
        else:
            found.append(LabelledCase(case, paths[0]))
    return found, refused


def _label_file_problem(paths: list[Path], real_root: Path) -> str:
    if not paths:
        return "no label map (<id>-seg.nii.gz or <id>_seg.nii.gz) beside the images"
    if len(paths) > 1:
        return f"more than one label map: {', '.join(p.name for p in paths)}"
    return file_problem(paths[0], real_root)


def brats2023_labels(values: np.ndarray, name: str) -> np.ndarray:
    """A label map of any integer or float dtype as uint8 BraTS 2023 labels (ET 4 becomes 3).

    Raises:
        InputError: non-integral values, values outside 0/1/2/3 and 0/1/2/4, or both 3 and 4.
    """
    if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
        raise InputError(f"{name} holds non-integer values; a label map holds 0, 1, 2 and 3 or 4")
    present = {int(v) for v in np.unique(values)}
    if not (present <= BRATS2023_VALUES or present <= BRATS2021_VALUES):
        raise InputError(f"{name} holds labels {sorted(present)}, outside BraTS 2023 (0 1 2 3) and BraTS 2021 "
                         "(0 1 2 4) labels")
    labels = values.astype(np.uint8)
    labels[labels == BRATS2021_ET] = Label.ET
    return labels


def load_real_case(labelled: LabelledCase) -> RealCase:
    """Read, validate and preprocess one labelled case (inference path) and check its label map.

    Raises:
        InputError: any problem of the images (as ``segment`` reports it) or of the label map.
    """
    case_id = labelled.case_id
    volumes = {mod: read_volume(labelled.case.paths[mod], case_id) for mod in MODALITIES}
    loaded = validate_case(case_id, volumes)
    label = read_volume(labelled.label_path, case_id)
    name = f"{case_id}: {labelled.label_path.name}"
    if label.data.shape != loaded.image.shape[1:] or not np.allclose(label.affine, loaded.affine,
                                                                     atol=AFFINE_TOLERANCE_MM):
        raise InputError(f"{name} is on another grid (shape {label.data.shape}) than the t1c "
                         f"{loaded.image.shape[1:]}; a label map must share its case's grid")
    labels = brats2023_labels(label.data, name)
    return RealCase(case_id, preprocess(loaded), labels)


def load_real_cases(root: Path) -> list[RealCase]:
    """Every usable labelled case under ``root``; refused ones are logged by name, the count used is logged."""
    found, refused = find_labelled_cases(root)
    cases = []
    for labelled in tqdm(found, desc=f"read {root.name}", unit="case", disable=None):
        try:
            cases.append(load_real_case(labelled))
        except InputError as error:
            refused.append(f"refused for training: {error}")
    for line in refused:
        log.warning("%s", line)
    log.info("%s: using %d labelled case(s), refused %d", root, len(cases), len(refused))
    if not cases:
        raise InputError(f"{root}: no usable labelled case ({len(refused)} refused); a case needs its four "
                         "modalities and a label map <id>-seg.nii.gz or <id>_seg.nii.gz")
    return cases


def regions_on_prepared_grid(case: RealCase) -> np.ndarray:
    """uint8 (3, x, y, z) nested regions (WT, TC, ET) of ``case`` on its prepared grid."""
    return regions_from_labels(to_prepared_grid(case.labels, case.prepared)).astype(np.uint8)


def split_cases(cases: list[RealCase], folds: int, fold: int) -> tuple[list[RealCase], list[RealCase]]:
    """(training, validation) by case: case j of the sorted ids is in fold j mod ``folds``; no folds: all train."""
    ordered = sorted(cases, key=lambda c: c.case_id)
    if folds == 0:
        return ordered, []
    return ([c for j, c in enumerate(ordered) if j % folds != fold],
            [c for j, c in enumerate(ordered) if j % folds == fold])
