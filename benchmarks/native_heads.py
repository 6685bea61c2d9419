"""Brain masks of the preparation measured on simulated native scans of real heads (htcnns.evaluation.native_heads).

For each SynthSeg head label map: native scans with its own skull, scalp, eyes and neck, a random pose and grids;
``htcnns.inference.prepare.to_brats_space`` on them; printed: the Dice on the native T1c grid of the prepared brain
mask with the head's own brain (``brain_dice``), of the atlas brain mask carried by the registration alone
(``atlas_dice``, no refinement), and the preparation seconds; ``--pictures DIR`` draws, per head, the native T1c
through the brain's centre with the head's own brain (green) and the prepared mask (red).

    python benchmarks/native_heads.py ../shared/data/synthseg-label-maps/training_seg_{01,07,19,20}.nii.gz
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.figure import Figure

from htcnns.evaluation.native_heads import HeadSimulation, simulate_head
from htcnns.inference.native_cases import NativeCase
from htcnns.inference.prepare import Atlas, labels_to_native, load_atlas, to_brats_space
from htcnns.labels import dice


def draw(head: HeadSimulation, ours: np.ndarray, path: Path) -> None:
    """Axial, coronal and sagittal planes of the native T1c through the brain's centre, both masks outlined."""
    t1c, truth = sitk.GetArrayViewFromImage(head.images["t1c"]), sitk.GetArrayViewFromImage(head.brain) > 0
    z, y, x = np.argwhere(truth).mean(axis=0).astype(int)
    figure = Figure(figsize=(12, 4.4))
    for k, cut in enumerate((np.s_[z], np.s_[:, y], np.s_[:, :, x])):
        axis = figure.add_subplot(1, 3, k + 1)
        aspect = 1.0 if k == 0 else head.images["t1c"].GetSpacing()[2] / head.images["t1c"].GetSpacing()[0]
        axis.imshow(t1c[cut], cmap="gray", origin="lower", aspect=aspect)
        axis.contour(truth[cut], [0.5], colors="lime", linewidths=0.8)
        axis.contour(ours[cut], [0.5], colors="red", linewidths=0.8)
        axis.set_axis_off()
    figure.suptitle(f"{head.name}: its own brain (green), the prepared brain mask (red)", fontsize=10)
    figure.savefig(path, dpi=80, bbox_inches="tight")


def measure(head: HeadSimulation, atlas: Atlas, work: Path,
            pictures: Path | None = None) -> dict[str, float]:
    sources = {}
    for modality, image in head.images.items():
        sources[modality] = work / f"{head.name}-{modality}.nrrd"
        sitk.WriteImage(image, str(sources[modality]))
    start = time.perf_counter()
    prepared = to_brats_space(NativeCase(head.name, sources), atlas)
    seconds = time.perf_counter() - start
    truth = sitk.GetArrayViewFromImage(head.brain) > 0
    ours = sitk.GetArrayFromImage(labels_to_native(prepared.brain, prepared)) > 0
    if pictures:
        draw(head, ours, pictures / f"{head.name}.png")
    carried = sitk.GetArrayFromImage(labels_to_native(sitk.Cast(atlas.brain > 0, sitk.sitkUInt8), prepared)) > 0
    return {"brain_dice": dice(ours, truth), "atlas_dice": dice(carried, truth),
            "extra_ml": float((ours & ~truth).sum()) * _voxel_ml(head.brain),
            "missed_ml": float((truth & ~ours).sum()) * _voxel_ml(head.brain), "seconds": seconds,
            **{f"s_{k}": v for k, v in prepared.seconds.items()}, **prepared.check.summary()}


def _voxel_ml(image: sitk.Image) -> float:
    x, y, z = image.GetSpacing()
    return x * y * z / 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("heads", type=Path, nargs="+", help="SynthSeg whole-head label maps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--pictures", type=Path, help="write one PNG per head here")
    args = parser.parse_args(argv)
    atlas = load_atlas()
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for i, path in enumerate(args.heads):
            head = simulate_head(path, args.seed + i)
            results[head.name] = measure(head, atlas, Path(work), args.pictures)
            print(head.name, json.dumps({k: round(v, 3) for k, v in results[head.name].items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
