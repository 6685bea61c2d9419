"""Per-model post-processing of the paper: region probabilities -> BraTS labels, then the ET rules.

1. Labels: WT where p(WT) >= 0.5; TC where also p(TC) >= 0.5; ET where also p(ET) >= 0.5 (nested by
   construction). Then the tuned ET threshold: ET voxels with p(ET) below ``et_threshold`` become NCR.
2. ET components (26-connected, cc3d) smaller than ``min_et_component_voxels`` whose mean p(ET) is below
   ``min_mean_et_probability`` become NCR.
3. If the ET left is smaller than ``min_total_et_voxels`` and its mean p(ET) is below
   ``min_mean_et_probability``, all ET becomes NCR.
Comparisons are strict: 16 voxels, or a mean of exactly 0.9 (as float32), keep their ET.

Not the paper's, off by default: ``remove_thin_oedema`` (``segment --oedema-opening R``) on the fused label map.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from htcnns.labels import REGION_LABELS, Label, labels_from_regions

DECISION_PROBABILITY = 0.5


@dataclass(frozen=True)
class PostprocessParams:
    """Per-model post-processing (paper, "Post-processing Strategy").

    et_threshold: ET voxels whose ET probability is below this become NCR (tuned per model).
    min_et_component_voxels: ET components (26-connected) smaller than this ...
    min_total_et_voxels: ... and a whole ET volume smaller than this ...
    min_mean_et_probability: ... become NCR when their mean ET probability is below this.
    """

    et_threshold: float = 0.5
    min_et_component_voxels: int = 16
    min_total_et_voxels: int = 73
    min_mean_et_probability: float = 0.9


def labels_from_probs(probs: np.ndarray) -> np.ndarray:
    """Nested label map from region probabilities.

    Args:
        probs: float32 (3, X, Y, Z) in [0, 1], channels WT, TC, ET.

    Returns:
        uint8 (X, Y, Z), values {0, NCR, ED, ET}.
    """
    return labels_from_regions(probs >= DECISION_PROBABILITY)


def apply_et_threshold(labels: np.ndarray, et_prob: np.ndarray, threshold: float) -> np.ndarray:
    """ET voxels whose ET probability is below ``threshold`` become NCR; returns a new map."""
    result = labels.copy()
    result[(labels == Label.ET) & (et_prob < threshold)] = Label.NCR
    return result


def relabel_small_et_components(
    labels: np.ndarray, et_prob: np.ndarray, *, min_voxels: int, min_mean_prob: float
) -> np.ndarray:
    """Turn small, uncertain ET components into NCR.

    Args:
        labels: uint8 (X, Y, Z), values {0, NCR, ED, ET}.
        et_prob: float32 (X, Y, Z) in [0, 1], same grid.
        min_voxels: components with fewer voxels than this are candidates (26-connectivity).
        min_mean_prob: a candidate whose mean ET probability is below this becomes NCR.

    Returns:
        A new label map; ``labels`` is not modified.
    """
    et = labels == Label.ET
    components = cc3d.connected_components(et, connectivity=26)
    ids = components[et]  # only ET voxels are counted: the rest is component 0
    sizes = np.bincount(ids, minlength=1)
    prob_sums = np.bincount(ids, weights=et_prob[et].astype(np.float64), minlength=1)
    mean_probs = prob_sums / np.maximum(sizes, 1)
    demote = (sizes < min_voxels) & (mean_probs < _as_float32(min_mean_prob))
    demote[0] = False
    result = labels.copy()
    result[demote[components]] = Label.NCR
    return result


def relabel_small_total_et(
    labels: np.ndarray, et_prob: np.ndarray, *, min_voxels: int, min_mean_prob: float
) -> np.ndarray:
    """If all ET together has fewer than ``min_voxels`` voxels and mean probability below ``min_mean_prob``,
    turn all of it into NCR; returns a new map."""
    et = labels == Label.ET
    count = int(et.sum())
    result = labels.copy()
    if 0 < count < min_voxels and float(et_prob[et].astype(np.float64).mean()) < _as_float32(min_mean_prob):
        result[et] = Label.NCR
    return result


def _as_float32(value: float) -> float:
    """A threshold rounded like the float32 probabilities it is compared with (0.9 -> 0.89999998)."""
    return float(np.float32(value))


def postprocess(probs: np.ndarray, params: PostprocessParams, *, brain: np.ndarray | None = None) -> np.ndarray:
    """The three stages above, in order, for one model's region probabilities.

    Args:
        probs: float32 (3, X, Y, Z) in [0, 1], channels WT, TC, ET.
        params: the model's post-processing parameters (from its manifest).
        brain: optional bool (X, Y, Z); voxels outside it are background whatever the network said.

    Returns:
        uint8 (X, Y, Z), values {0, NCR, ED, ET}.
    """
    if brain is not None:
        probs = probs * brain
    et_prob = probs[2]
    labels = apply_et_threshold(labels_from_probs(probs), et_prob, params.et_threshold)
    labels = relabel_small_et_components(
        labels, et_prob, min_voxels=params.min_et_component_voxels, min_mean_prob=params.min_mean_et_probability
    )
    return relabel_small_total_et(
        labels, et_prob, min_voxels=params.min_total_et_voxels, min_mean_prob=params.min_mean_et_probability
    )


def remove_thin_oedema(labels: np.ndarray, radius: int) -> np.ndarray:
    """Oedema in shells or strands thinner than a ball of ``radius`` voxels becomes background.

    The whole tumour is opened with that ball (which removes, e.g., a false rim of oedema along the cortex, even
    where it touches the tumour), then grown back by ``radius - 1`` voxels inside the original tumour, so the
    outline of what stays is kept. NCR and ET are never removed. ``radius`` 0 returns the map unchanged.

    Args:
        labels: uint8 (X, Y, Z), values {0, NCR, ED, ET}.
        radius: ball radius in voxels (mm on the BraTS grid).

    Returns:
        A new label map; ``labels`` is not modified.
    """
    result = labels.copy()
    if radius <= 0:
        return result
    tumour = labels > 0
    if not tumour.any():
        return result
    box = _padded_box(tumour, radius)
    whole, core = tumour[box], np.isin(labels[box], REGION_LABELS["TC"])
    thick = _within(_beyond(whole, radius), radius) | core
    kept = thick | (whole & _within(thick, radius - 1))
    result[box][~kept] = 0
    return result


def _padded_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` voxels on every side (inside the array)."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, mask.shape, strict=True))


def _beyond(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erosion of ``mask`` by a ball of ``radius``: voxels farther than ``radius`` from every voxel outside it."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1] > radius


def _within(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation of ``mask`` by a ball of ``radius``: voxels at most ``radius`` from a voxel of it."""
    if not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask) <= radius
