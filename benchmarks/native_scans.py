"""Preparation measured on simulated native scans of real BraTS-space cases (htcnns.evaluation.native_sim).

For each case: native scans with the SRI24 head fitted to the case's brain, a random head pose, per-sequence
motion and thick slices; ``htcnns.inference.prepare.to_brats_space`` on them; printed: the registration error (mm,
mean over the brain, against the pose and the fit), the brain-mask Dice against the case's own BraTS mask moved by
the fit (where registration to the atlas puts it), the preparation seconds and, with ``--models``, WT Dice on the
native T1c grid between the segmentation through preparation and references (``wt_agreement``).

    python benchmarks/native_scans.py ../shared/data/brats-real-unlabelled/BraTS-GLI-00027-000 [--models models]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from htcnns.evaluation.native_sim import (
    NATIVE_GRIDS,
    NativeSimulation,
    brats_space_images,
    registration_error_mm,
    simulate_native,
)
from htcnns.inference.native_cases import NativeCase
from htcnns.inference.prepare import BratsSpaceCase, labels_to_native, load_atlas, to_brats_space
from htcnns.labels import dice
from htcnns.training.real import label_files


def segment_labels(images: dict[str, sitk.Image], case_id: str, models: Path, work: Path,
                   options: Sequence[str] = ()) -> sitk.Image:
    """Segment one BraTS-space case with ``htcnns segment`` (a subprocess, given ``options`` too) and read the label
    map back."""
    folder = work / case_id
    folder.mkdir(parents=True)
    for modality, image in images.items():
        sitk.WriteImage(image, str(folder / f"{case_id}-{modality}.nii.gz"))
    output = work / f"{case_id}-out"
    subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(folder), "-o", str(output), "--models",
                    str(models), "--quiet", "--no-qc", *options], check=True)
    return sitk.ReadImage(str(output / f"{case_id}.nii.gz"))


def measure(folder: Path, seed: int, models: list[Path], case_space: bool = True,
            grids: Mapping[str, tuple[float, float]] = NATIVE_GRIDS, mirror: bool = False) -> dict[str, float]:
    atlas = load_atlas()
    head = atlas.head
    images = brats_space_images(folder, head)
    truth = simulate_native(images, head, atlas.brain, seed, grids)
    with tempfile.TemporaryDirectory() as work:
        native_dir = Path(work) / "native"
        native_dir.mkdir()
        sources = {}
        for modality, image in truth.images.items():
            sources[modality] = native_dir / f"{modality}.nrrd"
            sitk.WriteImage(image, str(sources[modality]))
        start = time.perf_counter()
        prepared = to_brats_space(NativeCase(folder.name, sources), atlas)
        seconds = time.perf_counter() - start
        true_brain = truth.in_atlas_space(images["t1c"] != 0)
        result = {"seconds": seconds, **{f"s_{k}": v for k, v in prepared.seconds.items()}, **prepared.check.summary(),
                  "registration_error_mm": registration_error_mm(prepared.to_native, truth, images["t1c"] != 0),
                  "brain_dice": dice(sitk.GetArrayViewFromImage(prepared.brain) > 0, true_brain)}
        true_wt = true_wt_on_native_grid(folder, head, truth)
        option_sets = [(), ("--mirror",)] if mirror else [()]
        variants = [(chosen, options) for chosen in models for options in option_sets]
        for i, (chosen, options) in enumerate(variants):  # the same preparation for each: their WT figures compare
            suffix = (f"@{chosen}" if len(models) > 1 else "") + ("+mirror" if options else "")
            agreement = wt_agreement(images, truth, prepared, true_brain, head, chosen, Path(work) / str(i),
                                     case_space, true_wt, options)
            result |= {f"{key}{suffix}": value for key, value in agreement.items()}
    return result


def true_wt_on_native_grid(folder: Path, head: sitk.Image, truth: NativeSimulation) -> np.ndarray | None:
    """The case's own WT label (``<id>-seg`` / ``_seg``) on the native T1c grid through the true pose, or None
    for an unlabelled case."""
    found = [path for paths in label_files(folder).values() for path in paths]
    if len(found) != 1:
        return None
    labels = sitk.Resample(sitk.ReadImage(str(found[0])), head, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    wt = sitk.Cast(labels > 0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(sitk.Resample(wt, truth.images["t1c"], truth.native_to_brats, sitk.sitkLinear)) > 0.5


def wt_agreement(images: dict[str, sitk.Image], truth: NativeSimulation, prepared: BratsSpaceCase,
                 true_brain: np.ndarray, head: sitk.Image, models: Path, work: Path,
                 case_space: bool = True, true_wt: np.ndarray | None = None,
                 options: Sequence[str] = ()) -> dict[str, float]:
    """WT Dice on the native T1c grid between the segmentation through preparation and three references: the 1 mm
    case in SRI24 space (moved by the fit, its own mask: what a BraTS preprocessing of these scans gives),
    ``wt_dice``; the 1 mm case in its own BraTS space, ``wt_dice_case_space`` (unless not ``case_space``); and,
    against the first, a perfect preparation (true transforms and mask, the native thick-slice scans),
    ``wt_dice_perfect``: the ceiling the thick slices leave; and between the segmentations through preparation and
    through the perfect one, ``wt_dice_vs_perfect``: what the preparation alone costs (what a comparison with
    another tool's preparation of the same scans measures). With the case's own labels (``true_wt``) also the
    WT Dice against them of the segmentation through preparation, ``wt_truth``, and of the 1 mm SRI24 one,
    ``wt_truth_1mm`` (the cases of brats-real-labelled trained the bundled networks: in-sample figures)."""
    brain = sitk.GetImageFromArray(true_brain.astype(np.uint8))
    brain.CopyInformation(head)
    sri24 = {m: sitk.Mask(truth.moved_to_atlas(image), brain) for m, image in images.items()}
    perfect = {m: sitk.Mask(truth.in_atlas_space_perfectly(m, head), brain) for m in images}
    native_t1c = truth.images["t1c"]

    def from_atlas(labels: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.Resample(labels, native_t1c, truth.native_to_atlas,
                                                    sitk.sitkNearestNeighbor)) > 0

    reference = from_atlas(segment_labels(sri24, "sri24", models, work, options))
    through = sitk.GetArrayFromImage(labels_to_native(segment_labels(dict(prepared.images), "prepared", models,
                                                                     work, options), prepared)) > 0
    perfectly = from_atlas(segment_labels(perfect, "perfect", models, work, options))
    result = {"wt_dice": dice(through, reference), "wt_dice_perfect": dice(perfectly, reference),
              "wt_dice_vs_perfect": dice(through, perfectly)}
    if true_wt is not None:
        result |= {"wt_truth": dice(through, true_wt), "wt_truth_1mm": dice(reference, true_wt)}
    if case_space:
        direct = sitk.Resample(segment_labels(images, "direct", models, work, options), native_t1c,
                               truth.native_to_brats, sitk.sitkNearestNeighbor)
        result["wt_dice_case_space"] = dice(through, sitk.GetArrayFromImage(direct) > 0)
    return result


def with_slices(settings: list[str], parser: argparse.ArgumentParser) -> dict[str, tuple[float, float]]:
    """``NATIVE_GRIDS`` with the slice thickness of each ``MODALITY=MM`` of ``--slice-mm`` replaced."""
    grids = dict(NATIVE_GRIDS)
    for setting in settings:
        modality, _, mm = setting.partition("=")
        if modality not in grids or not mm.isdigit() or int(mm) < 1:
            parser.error(f"--slice-mm {setting}: give MODALITY=MM, MODALITY one of {', '.join(grids)} and MM a "
                         "whole number of mm from 1")
        grids[modality] = (grids[modality][0], float(mm))
    return grids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path, nargs="+", help="BraTS-space case folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, action="append", default=[],
                        help="also segment both ways with these models and compare WT (repeatable: each set on the "
                             "same preparation)")
    parser.add_argument("--no-case-space", action="store_true",
                        help="leave out the comparison with the case's own BraTS space (one segmentation less)")
    parser.add_argument("--slice-mm", action="append", default=[], metavar="MODALITY=MM",
                        help="simulate that sequence with slices this thick, a whole number of mm (e.g. t2f=1: a 3D "
                             "FLAIR; repeatable; default: htcnns.evaluation.native_sim.NATIVE_GRIDS)")
    parser.add_argument("--mirror", action="store_true",
                        help="also segment each way with test-time mirroring (segment --mirror; keys +mirror)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    grids = with_slices(args.slice_mm, parser)
    results = {}
    for i, folder in enumerate(args.cases):
        results[folder.name] = measure(folder, args.seed + i, args.models, not args.no_case_space, grids,
                                       args.mirror)
        print(folder.name, json.dumps({k: round(v, 3) for k, v in results[folder.name].items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
