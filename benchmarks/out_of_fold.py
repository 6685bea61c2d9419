"""Out-of-fold Dice of each network and of their fusion on a folder of real labelled cases.

Each ``--fold DIR`` is a folder of model folders (one per network) trained with ``--folds K --fold i``; its cases
held out (read from each manifest's ``provenance.validation_cases``) are segmented by each network and by the
fusion of all of them, exactly as ``htcnns segment`` does (same preprocessing, post-processing and STAPLE).
``--oedema-opening R`` (repeatable) also scores the fusion with ``segment --oedema-opening R`` (not the paper's).
``--models DIR`` instead scores one models folder on every case (e.g. today's bundled weights, never trained on
them). Writes a JSON of per-case Dice and prints a table; ``--overlays DIR`` writes a FLAIR overlay per case.
``--record MODELS`` writes the out-of-fold Dice of each network (and of the fusion) into the manifest and model
card of the same network under ``MODELS`` (the bundled folder trained with the same recipe on all cases).

    python benchmarks/out_of_fold.py --data ../shared/data/brats-real-labelled --fold runs/f0 --fold runs/f1 \
        --json oof.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from real_cases import canonical  # benchmarks/real_cases.py, beside this script

from htcnns.inference.fuse import fuse_label_maps
from htcnns.inference.io import atomic_write_text
from htcnns.inference.overlay import save_overlay
from htcnns.inference.pipeline import load_models, model_labels
from htcnns.inference.postprocess import remove_thin_oedema
from htcnns.inference.predict import to_network_input
from htcnns.inference.preprocess import restore_input_grid
from htcnns.inference.review import Review, review_case
from htcnns.labels import REGIONS, region_dice
from htcnns.training.real import RealCase, find_labelled_cases, load_real_case
from htcnns.weights import LoadedModel

FUSED = "STAPLE"
CARD_SECTION = "\n## Out-of-fold Dice on real labelled cases\n"


def held_out(models: list[LoadedModel]) -> set[str]:
    """The case ids every model of a fold folder was validated on (they must agree)."""
    sets = {tuple(m.manifest.provenance.get("validation_cases", ())) for m in models}
    if len(sets) != 1:
        raise SystemExit(f"the models of one fold folder were validated on different cases: {sorted(sets)}")
    return set(sets.pop())


def score_case(case: RealCase, models: list[LoadedModel], openings: tuple[int, ...] = ()
               ) -> tuple[dict[str, dict[str, float]], np.ndarray, Review]:
    """Dice per network, for the STAPLE fusion and for the fusion with each oedema opening in ``openings``; returns
    them, the fused label map on the case's grid and the review of the networks' agreement (as ``htcnns segment``
    computes it)."""
    image = to_network_input(case.prepared.image, next(models[0].network.parameters()).device)
    per_model = {base_name(m.manifest.name): model_labels(image, case.prepared, m) for m in models}
    fused = fuse_label_maps(list(per_model.values()), "staple", device="cpu")
    labels = {**per_model, FUSED: fused} | {opened_name(r): remove_thin_oedema(fused, r) for r in openings}
    scored = {name: region_dice(restore_input_grid(lab, case.prepared), case.labels) for name, lab in labels.items()}
    return scored, restore_input_grid(fused, case.prepared), review_case(list(per_model.values()))


def opened_name(radius: int) -> str:
    """The results' name of the fusion with ``--oedema-opening radius``."""
    return f"{FUSED}+opening{radius}"


def overlay(case: RealCase, flair_path: Path, fused: np.ndarray, path: Path, title: str) -> None:
    """FLAIR with the reference and the fused prediction, three planes through the tumour."""
    flair = nib.load(flair_path)
    image, reference, predicted = (canonical(a, flair.affine) for a in (flair.get_fdata(dtype=np.float32),
                                                                        case.labels, fused))
    save_overlay(image, {"reference": reference, "HT-CNNs": predicted}, path, title)


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per case and mean, Dice WT / TC / ET of every network and the fusion."""
    names = list(next(iter(results.values())))
    lines = [f"{'case':<24}" + "".join(f"{n:>22}" for n in names)]
    rows = [*results.items(), ("mean", {n: {r: float(np.mean([c[n][r] for c in results.values()])) for r in REGIONS}
                                       for n in names})]
    for case_id, runs in rows:
        lines.append(f"{case_id:<24}" + "".join(f"{' / '.join(f'{runs[n][r]:.3f}' for r in REGIONS):>22}"
                                                 for n in names))
    return "\n".join(lines)


def review_table(results: dict[str, dict[str, dict[str, float]]], reviews: dict[str, Review]) -> str:
    """Per case: the review score, the flag and its reason beside the fusion's Dice (is a low Dice flagged?)."""
    lines = [f"{'case':<24}{'STAPLE WT/TC/ET':>22}  score  flagged  reason"]
    for case_id, review in reviews.items():
        dice = " / ".join(f"{results[case_id][FUSED][r]:.3f}" for r in REGIONS)
        lines.append(f"{case_id:<24}{dice:>22}  {review.score:.3f}  {str(review.needs_review):<7}  {review.reason}")
    return "\n".join(lines)


def base_name(name: str) -> str:
    """A run's network name without its run suffix (``unet-0`` -> ``unet``; ``axial_unet-final`` -> ``axial_unet``)."""
    return name.rsplit("-", 1)[0] if "-" in name else name


def record(models: Path, results: dict[str, dict[str, dict[str, float]]], folds: list[Path]) -> None:
    """Write each network's and the fusion's out-of-fold Dice into the manifests and cards under ``models``."""
    for folder in sorted(p for p in models.iterdir() if (p / "manifest.json").is_file()):
        manifest = json.loads((folder / "manifest.json").read_text())
        mine = {case: {"this network": r[folder.name], FUSED: r[FUSED]} for case, r in results.items()
                if folder.name in r}
        manifest["provenance"]["out_of_fold_dice"] = {"date": datetime.date.today().isoformat(), "cases": mine,
                                                      "fold_runs": [str(f) for f in folds]}
        atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        steps = sorted({json.loads((f / folder.name / "manifest.json").read_text())["provenance"]["steps"]
                        for f in folds if (f / folder.name / "manifest.json").is_file()})
        lines = ["Each case scored by the fold run that did not train on it (`benchmarks/out_of_fold.py --record`; "
                 f"fold runs of {'/'.join(map(str, steps))} steps, see docs/real-cases.md). Dice WT / TC / ET:", "",
                 f"| case | this network | {FUSED} of the three |", "|---|---|---|"]
        for case, row in mine.items():
            cells = [" / ".join(f"{row[k][r]:.3f}" for r in REGIONS) for k in ("this network", FUSED)]
            lines.append(f"| {case} | {cells[0]} | {cells[1]} |")
        card = (folder / "MODEL_CARD.md").read_text().split(CARD_SECTION)[0].rstrip("\n") + "\n"
        atomic_write_text(folder / "MODEL_CARD.md", card + CARD_SECTION + "\n" + "\n".join(lines) + "\n")


def with_windows(models: list[LoadedModel], rois: dict[str, int]) -> list[LoadedModel]:
    """``models`` with the sliding-window edge of the networks named in ``rois`` replaced (``--roi transbts=128``)."""
    return [dataclasses.replace(m, manifest=dataclasses.replace(m.manifest, roi_size=(rois[name],) * 3))
            if (name := base_name(m.manifest.name)) in rois else m for m in models]


def roi_override(text: str) -> tuple[str, int]:
    """``NAME=EDGE`` of ``--roi``."""
    name, _, edge = text.partition("=")
    if not edge.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=EDGE (e.g. transbts=128), got {text!r}")
    return name, int(edge)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of labelled cases")
    parser.add_argument("--fold", type=Path, action="append", default=[], help="a folder of one fold's models")
    parser.add_argument("--models", type=Path, help="score this models folder on every case instead")
    parser.add_argument("--json", type=Path, help="write per-case Dice here")
    parser.add_argument("--overlays", type=Path, help="write <case>.png overlays of the fusion here")
    parser.add_argument("--record", type=Path, help="write the scores into this models folder's manifests and cards")
    parser.add_argument("--review-json", type=Path, help="write each case's review (networks' agreement) here")
    parser.add_argument("--oedema-opening", type=int, action="append", default=[], metavar="R",
                        help="also score the fusion with segment --oedema-opening R (repeatable)")
    parser.add_argument("--roi", type=roi_override, action="append", default=[], metavar="NAME=EDGE",
                        help="run network NAME with cubic windows of EDGE voxels instead of its manifest's")
    args = parser.parse_args(argv)
    rois = dict(args.roi)
    cases = {c.case_id: c for c in find_labelled_cases(args.data)[0]}
    plans = [(with_windows(load_models(args.models, "cpu"), rois), set(cases))] if args.models else []
    for folder in args.fold:
        models = with_windows(load_models(folder, "cpu"), rois)
        plans.append((models, held_out(models) & set(cases)))
    results: dict[str, dict[str, dict[str, float]]] = {}
    reviews: dict[str, Review] = {}
    for models, case_ids in plans:
        for case_id in sorted(case_ids):
            case = load_real_case(cases[case_id])
            results[case_id], fused, reviews[case_id] = score_case(case, models, tuple(args.oedema_opening))
            print(case_id, {n: [round(d[r], 3) for r in REGIONS] for n, d in results[case_id].items()}, flush=True)
            if args.overlays:
                args.overlays.mkdir(parents=True, exist_ok=True)
                overlay(case, cases[case_id].case.paths["t2f"], fused, args.overlays / f"{case_id}.png",
                        f"{case_id} (real, out-of-fold), FLAIR")
    print(table(results))
    print(review_table(results, reviews))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.review_json:
        args.review_json.write_text(json.dumps({c: {"staple_dice": results[c][FUSED], **r.to_json()}
                                                for c, r in reviews.items()}, indent=2) + "\n")
    if args.record:
        record(args.record, results, args.fold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
