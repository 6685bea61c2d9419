"""BraTS 2023 lesion-wise metrics, numerically equal to the official challenge code, on crops for speed.

Definition (verified against the official code on ``shared/metrics_golden``), per region WT = {1, 2, 3},
TC = {1, 3}, ET = {3}:

- Lesions: 26-connected components of the reference, merged when their dilations touch: the reference is dilated
  ``d`` times with the 18-connected element, the dilated mask is labelled 26-connected, and lesion k is the
  reference inside dilated component k (which is also lesion k's matching region).
- Matching: every 26-connected prediction component with a voxel in a lesion's matching region belongs to that
  lesion, whole; components that belong to no lesion are false positives (any size).
- Lesions of volume <= t mm^3 are left out of the counts and scores (their matches are still not false positives).
- HD95: the surface-area weighted robust Hausdorff distance of DeepMind's ``surface-distance`` package, with the
  surface elements ("surfels") of each 2x2x2 neighbourhood weighted by their marching-cubes area.
- Misses and false positives score Dice 0 and HD95 374 (the diagonal of the 240x240x155 BraTS grid, rounded up).

Speed: each region is cropped once to the reference's dilated bounding box united with the prediction; every
lesion's surface distances are computed on the crop around that lesion and its matched components only.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from htcnns.labels import REGIONS, regions_from_labels

METRIC_NAMES: tuple[str, ...] = (
    "Num_TP", "Num_FP", "Num_FN", "Sensitivity", "Specificity", "Legacy_Dice", "Legacy_HD95",
    "GT_Complete_Volume", "LesionWise_Score_Dice", "LesionWise_Score_HD95",
)
"""The official column names, in the official order."""

HD95_PENALTY = 374.0
"""HD95 of a missed lesion, a false positive or an empty-vs-non-empty pair, in mm."""

_EPS = sys.float_info.min


class Challenge(StrEnum):
    """BraTS 2023 challenge; fixes the lesion dilation (voxels) and the lesion volume threshold (mm^3)."""

    GLI = "BraTS-GLI"
    SSA = "BraTS-SSA"
    MEN = "BraTS-MEN"
    PED = "BraTS-PED"
    MET = "BraTS-MET"

    @property
    def dilation(self) -> int:
        """Iterations of the 18-connected dilation that merges lesions and defines their matching region."""
        return 1 if self in (Challenge.MEN, Challenge.MET) else 3

    @property
    def volume_threshold(self) -> float:
        """Reference lesions of this volume (mm^3) or less are ignored."""
        return 2.0 if self is Challenge.MET else 50.0


# --- surfel areas: marching-cubes polygons of each 2x2x2 neighbourhood code --------------------------------------

_CORNERS: tuple[tuple[int, int, int], ...] = tuple(itertools.product((0, 1), repeat=3))


def _corner_bit(corner: tuple[int, int, int]) -> int:
    """Bit of a 2x2x2 corner in the neighbour code: (0, 0, 0) is the most significant, (1, 1, 1) the least."""
    return 7 - (4 * corner[0] + 2 * corner[1] + corner[2])


def _face_rings() -> list[list[tuple[int, int, int]]]:
    """The six cube faces, each as its four corners in cyclic order."""
    rings = []
    for axis in range(3):
        u, v = (a for a in range(3) if a != axis)
        for side in (0, 1):
            ring = []
            for a, b in ((0, 0), (1, 0), (1, 1), (0, 1)):
                corner = [0, 0, 0]
                corner[axis], corner[u], corner[v] = side, a, b
                ring.append(tuple(corner))
            rings.append(ring)
    return rings


def _iso_polygons(code: int) -> list[list[np.ndarray]]:
    """Marching-cubes polygons of one neighbour code, vertices at the midpoints of the cut cube edges.

    On a face with two diagonal inside corners, the minority corners of the cube (the inside ones when at most
    four are inside, else the outside ones) are cut off separately.
    """
    inside = {c: (code >> _corner_bit(c)) & 1 for c in _CORNERS}
    separated = 1 if sum(inside.values()) <= 4 else 0
    links: dict[tuple, list[tuple]] = {}
    for ring in _face_rings():
        edges = [tuple(sorted((ring[i], ring[(i + 1) % 4]))) for i in range(4)]
        cut = [e for e in edges if inside[e[0]] != inside[e[1]]]
        if len(cut) == 2:
            pairs = [(cut[0], cut[1])]
        elif len(cut) == 4:
            pairs = [(edges[i - 1], edges[i]) for i in range(4) if inside[ring[i]] == separated]
        else:
            pairs = []
        for a, b in pairs:
            links.setdefault(a, []).append(b)
            links.setdefault(b, []).append(a)
    polygons, seen = [], set()
    for start in links:
        if start in seen:
            continue
        cycle, previous, current = [start], None, start
        seen.add(start)
        while (following := [e for e in links[current] if e != previous and e not in seen]):
            previous, current = current, following[0]
            cycle.append(current)
            seen.add(current)
        polygons.append([(np.array(a, float) + np.array(b, float)) / 2 for a, b in cycle])
    return polygons


@functools.cache
def _triangulations(size: int) -> tuple[np.ndarray, ...]:
    """Every triangulation of a convex polygon with ``size`` vertices, each as vertex indices (size - 2, 3)."""

    def split(indices: tuple[int, ...]) -> list[list[tuple[int, int, int]]]:
        if len(indices) < 3:
            return [[]]
        return [[*left, *right, (indices[0], indices[m], indices[-1])]
                for m in range(1, len(indices) - 1) for left in split(indices[: m + 1]) for right in split(indices[m:])]

    return tuple(np.array(triangles, np.intp) for triangles in split(tuple(range(size))))


@functools.cache
def _surfel_normals() -> tuple[np.ndarray, ...]:
    """Per neighbour code, the area vectors (T, 3) of its triangles in unit voxels, largest first.

    Each polygon takes its triangulation of largest area: that gives the areas of DeepMind's ``surface-distance``
    lookup table for every code and any voxel spacing (summed largest first, they agree to the last bit at unit
    spacing and within one ulp otherwise).
    """
    table = []
    for code in range(256):
        normals = [np.zeros((0, 3))]
        for polygon in _iso_polygons(code):
            vertices = np.array(polygon)
            options = [np.cross(vertices[t[:, 1]] - vertices[t[:, 0]], vertices[t[:, 2]] - vertices[t[:, 0]]) / 2
                       for t in _triangulations(len(polygon))]
            normals.append(max(options, key=lambda vectors: float(np.linalg.norm(vectors, axis=1).sum())))
        stacked = np.concatenate(normals)
        table.append(stacked[np.argsort(-np.linalg.norm(stacked, axis=1), kind="stable")])
    return tuple(table)


@functools.lru_cache(maxsize=16)
def surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area in mm^2 of the surface inside each 2x2x2 neighbourhood code, (256,) float64."""
    sx, sy, sz = spacing
    areas = np.zeros(256)
    for code, normals in enumerate(_surfel_normals()):
        total = 0.0
        for n in normals:
            total += float(np.linalg.norm(np.array([n[0] * sy * sz, n[1] * sx * sz, n[2] * sx * sy])))
        areas[code] = total
    return areas


# --- surface distances ------------------------------------------------------------------------------------------

def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """8-bit code of every 2x2x2 neighbourhood of ``mask`` padded by one empty voxel: uint8, shape + 1.

    Voxel (i-1, j-1, k-1) of a neighbourhood gives bit 7 and voxel (i, j, k) bit 0, as in DeepMind's kernel.
    """
    codes = np.pad(mask.astype(np.uint8, copy=False), 1)
    for axis, shift in ((2, 1), (1, 2), (0, 4)):
        low = codes[(slice(None),) * axis + (slice(None, -1),)]
        high = codes[(slice(None),) * axis + (slice(1, None),)]
        codes = (low << np.uint8(shift)) | high
    return codes


def _directed_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """Surfel-area weighted percentile of the distances (DeepMind's ``compute_robust_hausdorff``, one direction)."""
    if distances.size == 0:
        return np.inf
    order = np.lexsort((areas, distances))
    distances, areas = distances[order], areas[order]
    cumulative = np.cumsum(areas) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(index, distances.size - 1)])


def _surfels(mask: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface elements of a mask: border corners (bool, shape + 1), their indices (N, 3) and areas (N,) in mm^2."""
    codes = neighbour_codes(mask)
    border = (codes != 0) & (codes != 255)
    return border, np.argwhere(border), table[codes[border]]


def _nearest_distances(points: np.ndarray, on_target: np.ndarray, targets: np.ndarray,
                       spacing: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from each grid point to the nearest target point; 0 where ``on_target`` says it is one."""
    distances = np.zeros(len(points))
    away = ~on_target
    if away.any():
        scale = np.array(spacing)
        tree = cKDTree(targets * scale, balanced_tree=False, compact_nodes=False)
        distances[away] = tree.query(points[away] * scale)[0]
    return distances


def robust_hausdorff(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float, float],
                     percent: float = 95.0) -> float:
    """Robust Hausdorff distance (mm) between two boolean masks of one shape: the larger directed percentile.

    Distances run between the surfel centres (corners of the voxel grid) of the two surfaces, as DeepMind's
    ``compute_surface_distances`` measures them with a distance transform; ``inf`` when a mask is empty. Only the
    masks' content matters, so callers may pass any crop that holds both.
    """
    table = surfel_area_table(spacing)
    border_ref, points_ref, areas_ref = _surfels(reference, table)
    border_pred, points_pred, areas_pred = _surfels(prediction, table)
    if len(points_ref) == 0 or len(points_pred) == 0:
        return np.inf
    to_pred = _nearest_distances(points_ref, border_pred[border_ref], points_pred, spacing)
    to_ref = _nearest_distances(points_pred, border_ref[border_pred], points_ref, spacing)
    return max(_directed_percentile(to_pred, areas_ref, percent), _directed_percentile(to_ref, areas_pred, percent))


# --- lesion-wise evaluation of one region -----------------------------------------------------------------------


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every True voxel, or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _union_box(boxes: Sequence[tuple[slice, ...]], margin: int = 0,
               shape: Sequence[int] | None = None) -> tuple[slice, ...]:
    """Smallest box holding all boxes, grown by ``margin`` and clipped to ``shape``."""
    box = []
    for axis in range(len(boxes[0])):
        start = min(b[axis].start for b in boxes) - margin
        stop = max(b[axis].stop for b in boxes) + margin
        box.append(slice(max(start, 0), stop if shape is None else min(stop, shape[axis])))
    return tuple(box)


def _component_boxes(labels: np.ndarray) -> list[tuple[slice, ...]]:
    """Bounding box of each label 1..max of a label image (index 0 unused)."""
    return [(), *ndimage.find_objects(labels)]


def _dilate18(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary dilation by the 18-connected 3x3x3 element, repeated; voxels outside the array count as empty.

    The element is the union of the three axis-aligned 3x3 squares, so one step is
    Dx(Dy(X) | Dz(X)) | Dz(Dy(X)) with the 1-D three-voxel dilations D.
    """

    def line(x: np.ndarray, axis: int) -> np.ndarray:
        out = x.copy()
        head = (slice(None),) * axis
        out[head + (slice(1, None),)] |= x[head + (slice(None, -1),)]
        out[head + (slice(None, -1),)] |= x[head + (slice(1, None),)]
        return out

    for _ in range(iterations):
        along_y = line(mask, 1)
        mask = line(along_y | line(mask, 2), 0) | line(along_y, 2)
    return mask


def _matches(lesions: np.ndarray, n_lesions: int, components: np.ndarray, n_components: int) -> list[np.ndarray]:
    """Per lesion 1..n (index 0 unused), the labels of the prediction components inside its matching region."""
    both = (lesions > 0) & (components > 0)
    keys = lesions[both].astype(np.int64) * (n_components + 1) + components[both]
    if (n_lesions + 1) * (n_components + 1) <= 1 << 20:
        present = np.flatnonzero(np.bincount(keys, minlength=(n_lesions + 1) * (n_components + 1)))
    else:
        present = np.unique(keys)
    lesion_of, component_of = np.divmod(present, n_components + 1)
    return [component_of[lesion_of == k] for k in range(n_lesions + 1)]


@dataclass(frozen=True)
class _Lesion:
    """One reference lesion's volume (mm^3), whether a prediction component matched it, its Dice and HD95."""

    volume: float
    matched: bool
    dice: float
    hd95: float


def _penalised(hd95: float) -> float:
    """HD95 with ``inf`` (an empty side) replaced by the penalty, as the official code does (finite values stay)."""
    return HD95_PENALTY if np.isinf(hd95) else hd95


def _volume(voxels: int, spacing: tuple[float, float, float]) -> float:
    """Volume in mm^3, multiplied left to right in float64 as the official code does."""
    return float(voxels) * spacing[0] * spacing[1] * spacing[2]


def _lesions(ref: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float], dilation: int,
             threshold: float, whole_hd95: float) -> tuple[list[_Lesion], int]:
    """Reference lesions and the number of false-positive prediction components of one region.

    HD95 is computed only for lesions above the volume threshold (the others never enter a score), on the crop
    around the lesion's matching region and its matched components. ``whole_hd95`` is reused when the only
    lesion and the components matched to it are the whole masks.
    """
    ref_box, pred_box = _bounding_box(ref), _bounding_box(pred)
    if ref_box is None:
        return [], 0 if pred_box is None else int(cc3d.connected_components(pred[pred_box], connectivity=26,
                                                                            return_N=True)[1])
    boxes = [ref_box] if pred_box is None else [ref_box, pred_box]
    region = _union_box(boxes, dilation, ref.shape)
    ref_crop = np.ascontiguousarray(ref[region])
    pred_crop = np.ascontiguousarray(pred[region])
    dilated = _dilate18(ref_crop, dilation)
    zones, n_lesions = cc3d.connected_components(dilated, connectivity=26, return_N=True)
    components, n_components = cc3d.connected_components(pred_crop, connectivity=26, return_N=True)
    matches = _matches(zones, n_lesions, components, n_components)
    lesion_voxels = np.bincount(zones[ref_crop], minlength=n_lesions + 1)
    overlap = np.bincount(zones[ref_crop & pred_crop], minlength=n_lesions + 1)
    component_voxels = np.bincount(components.ravel(), minlength=n_components + 1)
    zone_boxes = _component_boxes(zones)
    component_boxes = _component_boxes(components)
    matched_any = np.zeros(n_components + 1, bool)
    lesions = []
    for k in range(1, n_lesions + 1):
        matched = matches[k]
        matched_any[matched] = True
        volume = _volume(int(lesion_voxels[k]), spacing)
        if matched.size == 0:
            lesions.append(_Lesion(volume, False, 0.0, HD95_PENALTY))
            continue
        predicted = int(component_voxels[matched].sum())
        dice = 2.0 * int(overlap[k]) / (int(lesion_voxels[k]) + predicted)
        if volume <= threshold:
            hd95 = np.nan
        elif n_lesions == 1 and matched.size == n_components:
            hd95 = whole_hd95
        else:
            box = _union_box([zone_boxes[k], *(component_boxes[c] for c in matched)])
            selected = np.zeros(n_components + 1, bool)
            selected[matched] = True
            hd95 = robust_hausdorff((zones[box] == k) & ref_crop[box], selected[components[box]], spacing)
        lesions.append(_Lesion(volume, True, dice, _penalised(hd95)))
    return lesions, int(n_components - matched_any[1:].sum())


def region_metrics(ref: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float],
                   challenge: Challenge, total_voxels: int | None = None) -> dict[str, float | int]:
    """The ten official figures of one region, from its boolean reference and prediction masks.

    The masks may be a crop of the image that holds both masks with a margin of ``challenge.dilation`` voxels
    (or reaches the image's edge); ``total_voxels`` is then the image's voxel count, for the specificity.
    """
    n_ref, n_pred = int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
    tp = int(np.count_nonzero(ref & pred)) if n_ref and n_pred else 0
    fn, fp = n_ref - tp, n_pred - tp
    tn = (ref.size if total_voxels is None else total_voxels) - n_ref - fp
    if n_ref == 0 and n_pred == 0:
        dice, hd95 = 1.0, 0.0
    elif n_ref == 0 or n_pred == 0:
        dice, hd95 = 0.0, HD95_PENALTY
    else:
        dice = 2.0 * tp / (n_ref + n_pred)
        box = _bounding_box(ref | pred)
        hd95 = _penalised(robust_hausdorff(ref[box], pred[box], spacing))
    lesions, n_fp = _lesions(ref, pred, spacing, challenge.dilation, challenge.volume_threshold, hd95)
    kept = [lesion for lesion in lesions if lesion.volume > challenge.volume_threshold]
    denominator = len(kept) + n_fp
    if denominator == 0:
        lesion_dice, lesion_hd95 = 1.0, 0.0
    else:
        lesion_dice = float(np.sum([lesion.dice for lesion in kept])) / denominator
        lesion_hd95 = (float(np.sum([lesion.hd95 for lesion in kept])) + n_fp * HD95_PENALTY) / denominator
    return {
        "Num_TP": sum(lesion.matched for lesion in kept),
        "Num_FP": n_fp,
        "Num_FN": sum(not lesion.matched for lesion in kept),
        "Sensitivity": 1.0 if n_ref == 0 and n_pred == 0 else 1.0 * tp / (tp + fn + _EPS),
        "Specificity": 1.0 * tn / (tn + fp + _EPS),
        "Legacy_Dice": dice,
        "Legacy_HD95": hd95,
        "GT_Complete_Volume": _volume(n_ref, spacing),
        "LesionWise_Score_Dice": lesion_dice,
        "LesionWise_Score_HD95": lesion_hd95,
    }


def brats2023_metrics(pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: Sequence[float],
                      challenge: Challenge | str) -> dict[str, dict[str, float | int]]:
    """Official BraTS 2023 metrics of one case, per region WT, TC, ET.

    Args:
        pred_labels: prediction label map (X, Y, Z), BraTS 2023 values {0, 1 NCR, 2 ED, 3 ET}.
        ref_labels: reference label map of the same shape.
        spacing: voxel size in mm along X, Y, Z; the official code uses the prediction header's zooms (float32).
        challenge: a ``Challenge`` or its name, e.g. "BraTS-GLI".

    Returns:
        ``{region: {name: value}}`` with the ten ``METRIC_NAMES``; counts are int, the rest float.

    Raises:
        ValueError: the label maps differ in shape, or the spacing is not three positive numbers.
    """
    challenge = Challenge(challenge)
    if pred_labels.shape != ref_labels.shape or pred_labels.ndim != 3:
        raise ValueError(f"prediction {pred_labels.shape} and reference {ref_labels.shape} must be one 3-D shape")
    voxel = tuple(float(s) for s in spacing)
    if len(voxel) != 3 or min(voxel) <= 0:
        raise ValueError(f"spacing must be three positive numbers, got {tuple(spacing)}")
    box = _bounding_box((pred_labels != 0) | (ref_labels != 0))
    if box is None:
        box = (slice(0, 0),) * 3
    else:
        box = _union_box([box], challenge.dilation, pred_labels.shape)
    ref_regions, pred_regions = regions_from_labels(ref_labels[box]), regions_from_labels(pred_labels[box])
    return {region: region_metrics(ref, pred, voxel, challenge, total_voxels=pred_labels.size)
            for region, ref, pred in zip(REGIONS, ref_regions, pred_regions, strict=True)}
