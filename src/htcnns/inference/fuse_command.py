"""``htcnns fuse``: combine the label maps of several algorithms into one nested BraTS label map.

``staple`` and ``majority`` fuse per nested region (WT, TC, ET) with :mod:`htcnns.inference.fuse`; ``multilabel-staple``
is SimpleITK's ``MultiLabelSTAPLEImageFilter`` on the labels themselves, with undecided voxels set to background.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from htcnns.errors import InputError
from htcnns.inference.fuse import FusionMethod, StapleResult, fuse_label_maps, staple_label_maps
from htcnns.inference.io import read_volume, write_label_map
from htcnns.inference.predict import resolve_device
from htcnns.inference.validate import AFFINE_TOLERANCE_MM
from htcnns.labels import BRATS2021_ET, REGIONS, Label, LabelConvention, convert_labels

log = logging.getLogger(__name__)

MULTILABEL_STAPLE = "multilabel-staple"
METHODS: tuple[str, ...] = (FusionMethod.STAPLE.value, FusionMethod.MAJORITY.value, MULTILABEL_STAPLE)


@dataclass(frozen=True)
class RaterMap:
    """One input label map: BraTS 2023 labels (uint8, X, Y, Z) and the image whose grid it is on."""

    path: Path
    labels: np.ndarray
    image: nib.Nifti1Image


def to_brats2023(data: np.ndarray, name: str) -> np.ndarray:
    """A label map in BraTS 2023 values; BraTS 2021 maps (ET = 4) are converted.

    Raises:
        InputError: not 3-D, values that are not labels, or both 3 and 4 present.
    """
    if data.ndim != 3:
        raise InputError(f"{name}: expected a 3-D label map, got shape {data.shape}")
    values = np.unique(data)
    if not np.isin(values, (0, 1, 2, 3, 4)).all():
        odd = ", ".join(f"{value:g}" for value in values[~np.isin(values, (0, 1, 2, 3, 4))][:5])
        raise InputError(f"{name}: values {odd} are not BraTS labels (expected 0, 1, 2 and 3 (BraTS 2023) "
                         "or 4 (BraTS 2021))")
    if Label.ET in values and BRATS2021_ET in values:
        raise InputError(f"{name}: has both label 3 and label 4; a map uses BraTS 2023 (ET = 3) or 2021 (ET = 4)")
    labels = data.astype(np.uint8)
    labels[labels == BRATS2021_ET] = Label.ET
    return labels


def read_rater_map(path: Path) -> RaterMap:
    """Read one label map (any integer or float dtype holding label values)."""
    volume = read_volume(path, path.name)
    return RaterMap(path, to_brats2023(volume.data, path.name), volume.image)


def check_one_grid(raters: Sequence[RaterMap]) -> None:
    """Every map must share the first one's shape and affine (to 1e-3 mm): fusion pairs voxels, not places."""
    first = raters[0]
    for rater in raters[1:]:
        if rater.labels.shape != first.labels.shape:
            raise InputError(f"{rater.path.name} has shape {rater.labels.shape}, {first.path.name} has "
                             f"{first.labels.shape}: label maps to fuse must share one grid")
        if not np.allclose(rater.image.affine, first.image.affine, atol=AFFINE_TOLERANCE_MM):
            raise InputError(f"{rater.path.name} and {first.path.name} have different affines (voxel-to-world "
                             "matrices): label maps to fuse must share one grid; resample one of them first")


def multilabel_staple(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """SimpleITK ``MultiLabelSTAPLEImageFilter`` over the labels, undecided voxels set to background."""
    fusion = sitk.MultiLabelSTAPLEImageFilter()
    fusion.SetLabelForUndecidedPixels(int(Label.BACKGROUND))
    fused = fusion.Execute([sitk.GetImageFromArray(labels) for labels in label_maps])
    return sitk.GetArrayFromImage(fused).astype(np.uint8)


def fuse_maps(raters: Sequence[RaterMap], method: str, device: str = "cpu") -> tuple[np.ndarray, list[StapleResult]]:
    """The fused BraTS 2023 label map, and the per-region STAPLE results (only for ``staple``)."""
    maps = [rater.labels for rater in raters]
    if method == FusionMethod.STAPLE:
        return staple_label_maps(maps, device)
    if method == FusionMethod.MAJORITY:
        return fuse_label_maps(maps, FusionMethod.MAJORITY, device), []
    return multilabel_staple(maps), []


def rater_table(raters: Sequence[RaterMap], results: Sequence[StapleResult]) -> str:
    """Each rater's STAPLE sensitivity and specificity per region, as an aligned text table."""
    width = max(len(rater.path.name) for rater in raters)
    header = f"{'rater':<{width}}  " + "  ".join(f"{region + ' sens':>9} {region + ' spec':>9}" for region in REGIONS)
    rows = [header]
    for index, rater in enumerate(raters):
        cells = "  ".join(f"{float(r.sensitivity[index]):9.4f} {float(r.specificity[index]):9.4f}" for r in results)
        rows.append(f"{rater.path.name:<{width}}  {cells}")
    return "\n".join(rows)


def add_fuse_arguments(parser: argparse.ArgumentParser) -> None:
    """``htcnns fuse [--method M] -o OUT SEG1 SEG2 ...``."""
    parser.add_argument("maps", type=Path, nargs="+", metavar="SEG",
                        help="label maps on one grid, BraTS 2023 (ET = 3) or 2021 (ET = 4) labels")
    parser.add_argument("-o", "--output", type=Path, required=True, help="fused label map to write (.nii.gz)")
    parser.add_argument("--method", choices=METHODS, default=FusionMethod.STAPLE.value,
                        help="staple (per nested region, prints each rater's sensitivity/specificity), majority "
                             "(strict majority per region) or multilabel-staple (SimpleITK) (default: staple)")
    parser.add_argument("--labels", choices=[c.value for c in LabelConvention],
                        default=LabelConvention.BRATS2023.value,
                        help="labels of the written map: brats2023 (ET = 3) or brats2021 (ET = 4)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where STAPLE runs: auto (CUDA when present), cpu or cuda (default: auto)")
    parser.set_defaults(run=run_fuse)


def run_fuse(args: argparse.Namespace) -> int:
    """Read, check, fuse, write; print the raters' sensitivity and specificity for STAPLE."""
    if len(args.maps) < 2:
        raise InputError(f"fusing needs at least 2 label maps, got {len(args.maps)}")
    raters = [read_rater_map(path) for path in args.maps]
    check_one_grid(raters)
    fused, results = fuse_maps(raters, args.method, str(resolve_device(args.device)))
    write_label_map(convert_labels(fused, LabelConvention(args.labels)), raters[0].image, args.output)
    if results:
        print(rater_table(raters, results))
    log.info("fused %d label maps (%s) into %s", len(raters), args.method, args.output)
    return 0
