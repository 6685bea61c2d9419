"""Measure a models folder on the two real measuring cases of ``../shared/data`` (never used for training or tuning).

For each case it segments with every model folder under ``--models`` alone and with all of them fused, prints Dice
per region against the case's reference segmentation (an algorithm's output, not ground truth) and writes a
tri-planar overlay PNG of the fused result. BraTS-GLI-00001-000 is scored against the 2023 winner's segmentation
(labels 1 NCR, 2 ED, 3 ET). BraTS-MET-00110-000 is scored against AURORA's T1c-only output (1 = metastasis outside
the enhancing part, 2 = enhancing): WT = 1 + 2 and ET = 2; AURORA has no necrosis class, so TC is scored against ET.

    python benchmarks/real_cases.py --models models --output /tmp/real-cases [--record]

``--record`` writes the scores into each model's ``manifest.json`` (``provenance.real_case_dice``) and into a
section at the end of its ``MODEL_CARD.md``, replacing an earlier recording.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from htcnns.inference.io import atomic_write_text
from htcnns.inference.overlay import save_overlay
from htcnns.inference.pipeline import Settings, load_models, segment_folder
from htcnns.labels import REGIONS, Label, region_dice
from htcnns.weights import LoadedModel

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CARD_SECTION = "\n## Dice on the real measuring cases\n"
FUSED = "STAPLE of all"


@dataclass(frozen=True)
class MeasuringCase:
    """A real case folder, its id, its reference file and how to turn the reference into BraTS 2023 labels."""

    folder: str
    case_id: str
    reference: str
    aurora: bool = False


CASES = (
    MeasuringCase("brats2023-gli-00001-000", "BraTS-GLI-00001-000", "seg-BraTS23_1.nii.gz"),
    MeasuringCase("brats2023-met-00110-000", "BraTS-MET-00110-000", "t1c_segmentation.nii.gz", aurora=True),
)


def reference_labels(case: MeasuringCase, data: Path) -> np.ndarray:
    """The reference as BraTS 2023 labels on the input grid (AURORA: 1 -> ED, 2 -> ET)."""
    labels = np.asarray(nib.load(data / case.folder / case.reference).dataobj).astype(np.uint8)
    if case.aurora:
        labels = np.array([Label.BACKGROUND, Label.ED, Label.ET], np.uint8)[labels]
    return labels


def scores(predicted: np.ndarray, reference: np.ndarray, aurora: bool) -> dict[str, float]:
    """Dice per region; for AURORA references TC is compared with the reference's ET."""
    result = region_dice(predicted, reference)
    if aurora:
        tc = (predicted == Label.NCR) | (predicted == Label.ET)
        ref_et = reference == Label.ET
        result["TC"] = 2 * float((tc & ref_et).sum()) / max(int(tc.sum() + ref_et.sum()), 1)
    return result


def canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``array`` reoriented to RAS+ as nibabel's closest canonical orientation of ``affine`` has it."""
    return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(array, affine)).dataobj)


def segment(case: MeasuringCase, data: Path, models: list[LoadedModel], output: Path) -> tuple[np.ndarray, float]:
    """Segment one case with ``models``; returns the label map and the seconds taken."""
    input_dir = output / "input" / case.case_id
    input_dir.mkdir(parents=True, exist_ok=True)
    for image in (data / case.folder).glob(f"{case.case_id}-*.nii.gz"):
        target = input_dir / image.name
        if not target.exists():
            shutil.copyfile(image, target)  # links out of the input folder are refused by design
    start = time.perf_counter()
    [result] = segment_folder(input_dir, output, models, Settings(device="cpu", overwrite=True), write_report=False)
    if not result.ok:
        raise RuntimeError(result.error)
    return np.asarray(nib.load(result.output).dataobj), time.perf_counter() - start


def record(model: LoadedModel, dice: dict[str, dict[str, dict[str, float]]]) -> None:
    """Write one model's real-case Dice (and the fused ensemble's) into its manifest and model card.

    ``dice`` is {case id: {run name: {region: Dice}}}, the run names being model names and :data:`FUSED`.
    """
    measured = {case: {"this network": runs[model.manifest.name], FUSED: runs[FUSED]} for case, runs in dice.items()}
    manifest_path = model.folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["provenance"]["real_case_dice"] = {"date": datetime.date.today().isoformat(), "cases": measured,
                                                "references": {c.case_id: c.reference for c in CASES}}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    lines = ["Measured with `benchmarks/real_cases.py --record` (never used for training or tuning; references are "
             "algorithm outputs, see docs/real-cases.md). Dice WT / TC / ET:", "",
             "| case | reference | this network | STAPLE of the bundled networks |", "|---|---|---|---|"]
    for case in CASES:
        if case.case_id in measured:
            cells = [" / ".join(f"{measured[case.case_id][run][r]:.3f}" for r in REGIONS) for run in
                     ("this network", FUSED)]
            lines.append(f"| {case.case_id} | `{case.reference}` | {cells[0]} | {cells[1]} |")
    card_path = model.folder / "MODEL_CARD.md"
    card = card_path.read_text().split(CARD_SECTION)[0].rstrip("\n") + "\n"
    atomic_write_text(card_path, card + CARD_SECTION + "\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Print Dice per model and for the fused ensemble on each measuring case; write overlays."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True, help="folder of model folders")
    parser.add_argument("--output", type=Path, required=True, help="folder for label maps and overlay PNGs")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument("--record", action="store_true", help="write the scores into each model's manifest and card")
    args = parser.parse_args(argv)
    models = load_models(args.models, "cpu")
    runs = [(model.manifest.name, [model]) for model in models] + [(FUSED, models)]
    dice: dict[str, dict[str, dict[str, float]]] = {}
    for case in CASES:
        if not (args.data / case.folder).is_dir():
            print(f"{case.case_id}: not present under {args.data}; skipped")
            continue
        reference = reference_labels(case, args.data)
        for name, chosen in runs:
            predicted, seconds = segment(case, args.data, chosen, args.output / name.replace(" ", "_"))
            dice.setdefault(case.case_id, {})[name] = scores(predicted, reference, case.aurora)
            figures = " ".join(f"{region} {dice[case.case_id][name][region]:.3f}" for region in REGIONS)
            print(f"{case.case_id} {name:<14} {figures} ({seconds:.0f} s)", flush=True)
        flair = nib.load(args.data / case.folder / f"{case.case_id}-t2f.nii.gz")
        maps = {"reference": canonical(reference, flair.affine), "HT-CNNs": canonical(predicted, flair.affine)}
        save_overlay(canonical(flair.get_fdata(), flair.affine), maps, args.output / f"{case.case_id}.png",
                     f"{case.case_id} (real), FLAIR; reference: {case.reference}")
    if args.record:
        for model in models:
            record(model, dice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
