"""Relative contrasts of real and generated cases, in the units the networks see (z-scores over the brain).

For each tumour label and for CSF (ventricles) and GM, the median z-score minus the median z-score of WM,
on T1c and FLAIR: real ones from the DeepMedic BraTS 2015 cases (z-scored by their provider), synthetic ones
from :func:`htcnns.training.synthseg.generate` after the inference z-scoring. Tissue masks come from the SRI24 atlas
(probability >= 0.9; ventricles: CSF >= 0.95, eroded once, >= 15 voxels inside the brain), at least 15 voxels
away from the tumour, so real and synthetic cases are measured the same way, atlas misregistration included.

    python -m htcnns.training.synthseg.calibrate [--data ../shared/data] [--cases 12]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from htcnns.inference.preprocess import zscore
from htcnns.training.synthseg import HELD_OUT, Sources, default_data_root, generate, load_sources
from htcnns.training.synthseg.anatomy import BRATS_SHAPE, load_canonical
from htcnns.training.synthseg.tumour import DEEPMEDIC_DIR, DEEPMEDIC_TO_BRATS2023

ROWS = ("csf", "gm", "ncr", "ed", "et")
_REAL_FILES = {"t1c": "T1c_subtrMeanDivStd.nii.gz", "t2f": "Flair_subtrMeanDivStd.nii.gz"}
_CHANNELS = {"t1c": 1, "t2f": 3}


def tissue_masks(sources: Sources) -> dict[str, np.ndarray]:
    """Full-grid bool masks of the atlas: ventricles ("csf"), "gm", "wm"."""
    probs = np.zeros((3, *BRATS_SHAPE), np.float32)
    crop = tuple(slice(int(a), int(a + n)) for a, n in zip(sources.atlas.lo, sources.atlas.probs.shape[2:],
                                                           strict=True))
    probs[(slice(None), *crop)] = sources.atlas.probs[0].numpy()
    deep = ndimage.distance_transform_edt(probs.sum(axis=0) > 0.5) >= 15
    return {"csf": ndimage.binary_erosion(probs[0] >= 0.95) & deep, "gm": probs[1] >= 0.9, "wm": probs[2] >= 0.9}


def contrasts(z: np.ndarray, labels: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Median z of each ROWS class minus median z of WM; tissue masks are kept 15 voxels off the tumour."""
    far = ~ndimage.binary_dilation(labels > 0, iterations=15)
    brain = z != z.min()  # the real cases' background is a constant, not 0
    wm = float(np.median(z[masks["wm"] & far & brain]))
    result = {}
    for name in ROWS:
        if name in masks:
            values = z[masks[name] & far & brain]
        else:
            values = z[labels == ("ncr", "ed", "et").index(name) + 1]
        result[name] = float(np.median(values)) - wm if values.size else float("nan")
    return result


def real_contrasts(root: Path, masks: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """Case name -> modality (t1c, t2f) -> contrasts, for every DeepMedic case under ``root``."""
    out = {}
    for folder in sorted((root / DEEPMEDIC_DIR).glob("*/*")):
        raw = np.rint(np.asarray(load_canonical(folder / "OTMultiClass.nii.gz").dataobj)).astype(np.uint8)
        labels = DEEPMEDIC_TO_BRATS2023[np.minimum(raw, 4)]
        out[folder.name] = {m: contrasts(np.asarray(load_canonical(folder / f).dataobj, np.float32), labels, masks)
                            for m, f in _REAL_FILES.items()}
    return out


def synthetic_contrasts(sources: Sources, seeds: Sequence[int],
                        masks: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """Seed -> modality (t1c, t2f) -> contrasts of generated cases, after the inference z-scoring."""
    out = {}
    for seed in seeds:
        case = generate(seed, sources)
        z = zscore(case.image, case.image.any(axis=0))
        out[str(seed)] = {m: contrasts(z[c], case.label, masks) for m, c in _CHANNELS.items()}
    return out


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown rows: one per case, columns t1c then t2f contrasts."""
    lines = ["| case | " + " | ".join(f"{m} {r}" for m in _CHANNELS for r in ROWS) + " |",
             "|---|" + "---:|" * (2 * len(ROWS))]
    for name, per_mod in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{per_mod[m][r]:+.2f}" for m in _CHANNELS for r in ROWS) + " |")
    return "\n".join(lines)


def summary_row(name: str, results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One markdown row: median [min, max] over the cases of ``results`` for every column of :func:`table`."""
    cells = []
    for modality in _CHANNELS:
        for row in ROWS:
            values = np.array([r[modality][row] for r in results.values()])
            values = values[np.isfinite(values)]
            cells.append(f"{np.median(values):+.1f} [{values.min():+.1f}, {values.max():+.1f}]" if values.size else "-")
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the real and synthetic contrast tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cases", type=int, default=12, help="synthetic cases (seeds 0..N-1)")
    args = parser.parse_args(argv)
    root = args.data or default_data_root()
    sources = load_sources(root)
    masks = tissue_masks(sources)
    real = real_contrasts(root, masks)
    synthetic = synthetic_contrasts(sources, range(args.cases), masks)
    training = {k: v for k, v in real.items() if k not in HELD_OUT}
    report = ["real (DeepMedic BraTS 2015)", table(real), "", f"synthetic (seeds 0..{args.cases - 1})",
              table(synthetic), "", "summary: median [min, max]", table({}).split("\n", 2)[0],
              table({}).split("\n", 2)[1], summary_row(f"real, {len(training)} training cases", training),
              summary_row(f"synthetic, {len(synthetic)} cases", synthetic)]
    print("\n".join(report))  # a command-line report  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
