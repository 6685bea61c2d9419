"""``make bench``: our BraTS 2023 metrics and STAPLE against the reference tools, per case, in one run.

For each label-map pair of ``../shared/metrics_golden/pairs`` (or ``--pairs DIR``) it prints the wall time of
``htcnns.evaluation.metrics.brats2023_metrics`` (one challenge, all three regions), of our STAPLE over three raters (the
reference, the prediction and the prediction shifted by one voxel; WT, TC and ET) and of SimpleITK's
``STAPLEImageFilter`` on the same raters. The official BraTS 2023 metrics code is not run here (it needs pandas < 1.5
and numpy < 2); its times on this machine are in ``../shared/metrics_golden/README.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from htcnns.evaluation.metrics import Challenge, brats2023_metrics
from htcnns.inference.fuse import rater_regions, staple

DEFAULT_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "metrics_golden" / "pairs"


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall-clock runs (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def simpleitk_staple(raters: np.ndarray) -> None:
    """SimpleITK's binary STAPLE of bool (R, ...) raters."""
    sitk.STAPLEImageFilter().Execute([sitk.GetImageFromArray(rater.view(np.uint8)) for rater in raters])


def bench_pair(folder: Path, repeats: int) -> tuple[float, float, float]:
    """Seconds for our metrics, our STAPLE (3 regions) and SimpleITK's STAPLE (3 regions) on one pair."""
    pred_image = nib.load(folder / "pred.nii.gz")
    pred = np.asarray(pred_image.dataobj, dtype=np.uint8)
    ref = np.asarray(nib.load(folder / "ref.nii.gz").dataobj, dtype=np.uint8)
    spacing = pred_image.header.get_zooms()[:3]
    metrics = best_seconds(lambda: brats2023_metrics(pred, ref, spacing, Challenge.GLI), repeats)
    regions = rater_regions([ref, pred, np.roll(pred, 1, axis=0)])
    ours = best_seconds(lambda: [staple(masks).mask() for masks in regions], repeats)
    theirs = best_seconds(lambda: [simpleitk_staple(masks.numpy()) for masks in regions], 1)
    return metrics, ours, theirs


def main(argv: list[str] | None = None) -> int:
    """Print one row per pair and the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="folder of <pair>/{ref,pred}.nii.gz")
    parser.add_argument("--repeats", type=int, default=3, help="runs of our code per pair; the best is shown")
    args = parser.parse_args(argv)
    folders = sorted(path.parent for path in args.pairs.glob("*/ref.nii.gz"))
    if not folders:
        print(f"no label-map pairs under {args.pairs} (the shared golden set is absent); nothing to time")
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SimpleITK {sitk.Version.VersionString()}")
    print(f"{'pair':<34} {'metrics s':>9} {'STAPLE s':>9} {'SimpleITK s':>11} {'speed-up':>8}")
    rows = []
    for folder in folders:
        metrics, ours, theirs = bench_pair(folder, args.repeats)
        rows.append((metrics, ours, theirs))
        print(f"{folder.name:<34} {metrics:9.3f} {ours:9.3f} {theirs:11.3f} {theirs / ours:7.1f}x", flush=True)
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(f"{'median':<34} {medians[0]:9.3f} {medians[1]:9.3f} {medians[2]:11.3f} {medians[2] / medians[1]:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
