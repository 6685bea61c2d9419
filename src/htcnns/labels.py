"""BraTS label values, nested regions and the one spelling of each MRI modality."""

from enum import IntEnum, StrEnum

import numpy as np

MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
"""Channel order everywhere in the project: T1, T1 post-contrast, T2, T2-FLAIR (BraTS 2023 names)."""

REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
"""Nested evaluation regions, outer to inner; also the network output channel order."""


class Label(IntEnum):
    """BraTS 2023 label values (BraTS 2021 writes ET as 4)."""

    BACKGROUND = 0
    NCR = 1
    ED = 2
    ET = 3


BRATS2021_ET = 4

REGION_LABELS: dict[str, tuple[int, ...]] = {
    "WT": (Label.NCR, Label.ED, Label.ET),
    "TC": (Label.NCR, Label.ET),
    "ET": (Label.ET,),
}
"""BraTS 2023 label values of each region (the official evaluation's definition for every challenge)."""


class LabelConvention(StrEnum):
    """Label values on disk: BraTS 2023 (ET = 3) or BraTS 2021 (ET = 4)."""

    BRATS2023 = "brats2023"
    BRATS2021 = "brats2021"


def convert_labels(labels: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """BraTS 2023 labels as written: unchanged, or ET moved to 4 for BraTS 2021."""
    if convention == LabelConvention.BRATS2021:
        return np.where(labels == Label.ET, np.uint8(BRATS2021_ET), labels).astype(np.uint8)
    return labels


def legal_labels(convention: LabelConvention) -> frozenset[int]:
    """The values an output may hold under ``convention``."""
    et = BRATS2021_ET if convention == LabelConvention.BRATS2021 else int(Label.ET)
    return frozenset({int(Label.BACKGROUND), int(Label.NCR), int(Label.ED), et})


def regions_from_labels(labels: np.ndarray) -> np.ndarray:
    """Nested region masks of a BraTS 2023 label map.

    Args:
        labels: integer or float (X, Y, Z) label values; values outside {NCR, ED, ET} count as background.

    Returns:
        bool (3, X, Y, Z) in REGIONS order: WT = NCR+ED+ET, TC = NCR+ET, ET = ET.
    """
    return np.stack([np.isin(labels, REGION_LABELS[region]) for region in REGIONS])


def labels_from_regions(regions: np.ndarray) -> np.ndarray:
    """Paint ET inside TC inside WT, so the result is always a valid nested label map.

    Args:
        regions: bool (3, X, Y, Z) in REGIONS order; TC outside WT and ET outside TC are dropped.

    Returns:
        uint8 (X, Y, Z), values {0, NCR, ED, ET}.
    """
    wt = regions[0]
    tc = regions[1] & wt
    et = regions[2] & tc
    labels = np.zeros(wt.shape, np.uint8)
    labels[wt] = Label.ED
    labels[tc] = Label.NCR
    labels[et] = Label.ET
    return labels


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def region_dice(pred_labels: np.ndarray, truth_labels: np.ndarray) -> dict[str, float]:
    """Dice per region (WT, TC, ET) of two BraTS 2023 label maps of one shape."""
    pred, truth = regions_from_labels(pred_labels), regions_from_labels(truth_labels)
    return {name: dice(p, t) for name, p, t in zip(REGIONS, pred, truth, strict=True)}
