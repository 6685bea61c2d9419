"""``htcnns evaluate``: the official BraTS 2023 lesion-wise metrics of a folder of predictions against references.

Files are paired by case id: a reference ``<id>-seg.nii.gz`` or ``<id>.nii.gz`` (also ``_seg`` and ``.nii``),
anywhere under the reference folder, with the prediction ``<id>.nii.gz`` (or ``.nii``) under the prediction folder.
BraTS modality images (``-t1n``, ``_flair``, ...) are skipped, so a BraTS training folder works as reference folder.
A reference without a prediction is scored against an empty prediction and listed in ``missing_predictions``; a
prediction without a reference is skipped with a warning. The spacing is the prediction header's, as in the
official code (the reference's for a missing prediction).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from htcnns.errors import InputError
from htcnns.evaluation.metrics import METRIC_NAMES, Challenge, brats2023_metrics
from htcnns.inference.cases import parse_name
from htcnns.inference.io import atomic_write_text, read_volume
from htcnns.labels import BRATS2021_ET, REGIONS, Label, LabelConvention

log = logging.getLogger(__name__)


_NIFTI = re.compile(r"(?P<stem>.+?)\.nii(\.gz)?", re.DOTALL)
_SEG_SUFFIX = re.compile(r"[-_]seg$")

Scores = dict[str, dict[str, float | int]]


@dataclass(frozen=True)
class CasePair:
    """A reference label map and its prediction (None when the prediction folder has none)."""

    case_id: str
    reference: Path
    prediction: Path | None


def _label_files(root: Path) -> list[tuple[str, Path]]:
    """(file stem, path) of every NIfTI file under ``root`` that is neither hidden nor a BraTS modality image."""
    found = []
    for path in sorted(root.rglob("*.nii*")):
        match = _NIFTI.fullmatch(path.name)
        if match and not path.name.startswith(".") and path.is_file() and parse_name(path.name) is None:
            found.append((match["stem"], path))
    return found


def _by_case(files: Sequence[tuple[str, Path]], folder: Path, kind: str) -> dict[str, Path]:
    """Case id -> path; two files for one case id is an error."""
    cases: dict[str, Path] = {}
    for case_id, path in files:
        if case_id in cases:
            raise InputError(f"{case_id}: two {kind} files in {folder}: {cases[case_id].name} and {path.name}; "
                             "keep one")
        cases[case_id] = path
    return cases


def pair_files(pred_dir: Path, ref_dir: Path) -> list[CasePair]:
    """Pair every reference under ``ref_dir`` with its prediction under ``pred_dir``, sorted by case id.

    Raises:
        InputError: a folder is missing, the reference folder has no label map, or a case id has two files.
    """
    for folder, kind in ((pred_dir, "prediction"), (ref_dir, "reference")):
        if not folder.is_dir():
            raise InputError(f"{kind} folder {folder} does not exist or is not a folder")
    references = _by_case([(_SEG_SUFFIX.sub("", stem), path) for stem, path in _label_files(ref_dir)],
                          ref_dir, "reference")
    if not references:
        raise InputError(f"no reference label maps (<id>-seg.nii.gz or <id>.nii.gz) found under {ref_dir}")
    predictions = _by_case(_label_files(pred_dir), pred_dir, "prediction")
    for case_id in sorted(set(predictions) - set(references)):
        log.warning("%s: prediction %s has no reference in %s; skipped", case_id, predictions[case_id].name, ref_dir)
    return [CasePair(case_id, references[case_id], predictions.get(case_id)) for case_id in sorted(references)]


def _read_labels(path: Path, case_id: str, labels: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A label map in BraTS 2023 values and its header zooms (float32 values, as nibabel gives them)."""
    volume = read_volume(path, case_id)
    if volume.data.ndim != 3:
        raise InputError(f"{case_id}: {path.name} has shape {volume.data.shape}; a label map must be 3-D")
    data = volume.data
    if labels == LabelConvention.BRATS2021:
        data = np.where(data == BRATS2021_ET, np.float32(Label.ET), data)
    elif np.any(data == BRATS2021_ET):
        log.warning("%s: %s holds label %d, which BraTS 2023 labels count as background; "
                    "use --labels brats2021 if it is enhancing tumour", case_id, path.name, BRATS2021_ET)
    zooms = volume.image.header.get_zooms()[:3]
    return data, (float(zooms[0]), float(zooms[1]), float(zooms[2]))


def evaluate_case(pair: CasePair, challenge: Challenge | str, labels: str = "brats2023") -> Scores:
    """The official metrics of one case, ``{region: {name: value}}``; a missing prediction counts as empty.

    Raises:
        InputError: a file cannot be read, or the two label maps differ in shape.
    """
    reference, reference_zooms = _read_labels(pair.reference, pair.case_id, labels)
    if pair.prediction is None:
        prediction, zooms = np.zeros_like(reference), reference_zooms
    else:
        prediction, zooms = _read_labels(pair.prediction, pair.case_id, labels)
    if prediction.shape != reference.shape:
        raise InputError(f"{pair.case_id}: the prediction {pair.prediction.name} has shape {prediction.shape} but "
                         f"the reference {pair.reference.name} has shape {reference.shape}; both must be on the "
                         "same voxel grid.")
    return brats2023_metrics(prediction, reference, zooms, challenge)


def summarize(cases: Mapping[str, Scores]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, population standard deviation and median of every figure over the cases, per region."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for region in REGIONS:
        summary[region] = {}
        for name in METRIC_NAMES:
            values = np.array([scores[region][name] for scores in cases.values()], float)
            summary[region][name] = (
                {"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values))}
                if values.size else {"mean": float("nan"), "std": float("nan"), "median": float("nan")}
            )
    return summary


def evaluate_folders(pred_dir: Path, ref_dir: Path, challenge: Challenge | str,
                     labels: str = "brats2023") -> dict[str, object]:
    """Score every reference under ``ref_dir``: ``{"cases", "summary", "missing_predictions"}``.

    Raises:
        InputError: see ``pair_files`` and ``evaluate_case``.
    """
    challenge = Challenge(challenge)
    pairs = pair_files(pred_dir, ref_dir)
    missing = [pair.case_id for pair in pairs if pair.prediction is None]
    for case_id in missing:
        log.warning("%s: no prediction in %s; scored as an empty prediction", case_id, pred_dir)
    cases = {pair.case_id: evaluate_case(pair, challenge, labels)
             for pair in tqdm(pairs, desc="cases", unit="case", disable=None)}
    return {"cases": cases, "summary": summarize(cases), "missing_predictions": missing}


def csv_text(cases: Mapping[str, Scores]) -> str:
    """One row per case and region: case_id, region, then the ten official figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "region", *METRIC_NAMES])
    for case_id, scores in cases.items():
        for region in REGIONS:
            writer.writerow([case_id, region, *(repr(scores[region][name]) for name in METRIC_NAMES)])
    return buffer.getvalue()


def _number(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4f}"


def summary_table(report: Mapping[str, object], challenge: Challenge | str) -> str:
    """The summary as a small text table: mean (std) of every figure per region."""
    cases, summary = report["cases"], report["summary"]
    missing = len(report["missing_predictions"])
    title = f"{Challenge(challenge).value}: {len(cases)} case(s)"
    if missing:
        title += f", {missing} without prediction (scored as empty)"
    lines = [f"{title}; mean (std)", f"{'':<22}" + "".join(f"{region:>24}" for region in REGIONS)]
    for name in METRIC_NAMES:
        cells = (summary[region][name] for region in REGIONS)
        lines.append(f"{name:<22}" + "".join(f"{_number(c['mean'])} ({_number(c['std'])})".rjust(24) for c in cells))
    return "\n".join(lines)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``htcnns evaluate``."""
    parser.add_argument("--pred", type=Path, required=True, help="folder of predictions <case-id>.nii.gz")
    parser.add_argument("--ref", type=Path, required=True,
                        help="folder of references <case-id>-seg.nii.gz or <case-id>.nii.gz (searched recursively)")
    parser.add_argument("--challenge", choices=[c.value for c in Challenge], required=True,
                        help="fixes lesion dilation and volume threshold: GLI/SSA/PED 3 voxels, 50 mm^3; "
                             "MEN 1, 50; MET 1, 2")
    parser.add_argument("--labels", choices=[c.value for c in LabelConvention], default="brats2023",
                        help="label values of both folders: brats2023 (ET = 3) or brats2021 (ET = 4)")
    parser.add_argument("--json", type=Path, default=None, help="write per-case figures and the summary as JSON")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per case and region as CSV")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """CLI adapter: score the folders, write the requested files, print the summary."""
    report = evaluate_folders(args.pred, args.ref, args.challenge, args.labels)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    if args.csv is not None:
        atomic_write_text(args.csv, csv_text(report["cases"]))
    print(summary_table(report, args.challenge))
    return 0
