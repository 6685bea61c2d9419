"""Tumours: real expert label maps (DeepMedic's BraTS 2015 subset) or procedural ones, randomly transformed.

A tumour is turned into soft memberships of NCR, ED and ET (one-hot channels resampled trilinearly through a
random flip, rotation, scale and elastic deformation), so region borders get partial-volume values and the
label map is their arg-max. ``place`` then pastes it into the output box, keeping oedema in brain parenchyma
and the core inside the brain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from htcnns.errors import InputError
from htcnns.labels import Label
from htcnns.training.phantoms import _axes, _core_masks, _smooth_field
from htcnns.training.synthseg.anatomy import load_canonical, random_rotation

DEEPMEDIC_DIR = "deepmedic-brats2015/brats2015TrainingData"
HELD_OUT = ("brats_2013_pat0003_1",)
"""DeepMedic label maps that never feed the generator: kept to validate generated tumours against."""
DEEPMEDIC_TO_BRATS2023 = np.array([0, Label.NCR, Label.ED, Label.NCR, Label.ET], dtype=np.uint8)
"""OTMultiClass value (0 bg, 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing) -> BraTS 2023 label."""


@dataclass(frozen=True)
class TumourSource:
    """A real tumour: name, its BraTS 2023 labels cropped to their box (uint8, RAS+) and that box's centre
    on the full BraTS grid (float (3,), voxels)."""

    name: str
    labels: np.ndarray
    centre: np.ndarray


def load_tumour_sources(folder: Path, exclude: tuple[str, ...] = HELD_OUT) -> tuple[TumourSource, ...]:
    """The DeepMedic expert label maps under ``folder`` (``deepmedic-brats2015/brats2015TrainingData``) but the
    cases named in ``exclude``, mapped to BraTS 2023 labels (3 -> NCR, 4 -> ET), cropped to the tumour + 2 voxels.

    Raises:
        InputError: if no label map is found.
    """
    paths = sorted(p for p in folder.glob("*/*/OTMultiClass.nii.gz") if p.parent.name not in exclude)
    if not paths:
        raise InputError(f"no tumour label maps found under {folder} (expected */*/OTMultiClass.nii.gz)")
    return tuple(load_label_map(path, path.parent.name, DEEPMEDIC_TO_BRATS2023) for path in paths)


def load_label_map(path: Path, name: str, to_brats2023: np.ndarray) -> TumourSource:
    """The tumour of the label map ``path`` (on the BraTS grid), its values mapped through ``to_brats2023``
    (indexed by the value, clipped to its last entry), cropped to the tumour + 2 voxels."""
    raw = np.rint(np.asarray(load_canonical(path).dataobj)).astype(np.uint8)
    labels = to_brats2023[np.minimum(raw, len(to_brats2023) - 1)]
    present = np.argwhere(labels > 0)
    lo, hi = np.maximum(present.min(axis=0) - 2, 0), np.minimum(present.max(axis=0) + 3, labels.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return TumourSource(name, np.ascontiguousarray(labels[crop]), (lo + hi - 1) / 2.0)


def procedural_labels(rng: np.random.Generator) -> np.ndarray:
    """A glioma-like label map, uint8 in its own box: distorted oedema ellipsoid around a core with necrosis.

    Oedema radii 10-32 voxels; the core variant is classic (rim around necrosis), solid or non-enhancing.
    """
    radii = rng.uniform(10.0, 32.0) * rng.uniform(0.8, 1.2, 3)
    half = np.ceil(radii * 1.3).astype(int) + 2
    lo, hi = -half, half + 1
    axes = _axes(lo, hi, np.zeros(3), radii)
    shape = tuple(int(n) for n in hi - lo)
    d = np.sqrt(axes[0] ** 2 + axes[1] ** 2 + axes[2] ** 2) - 0.2 * _smooth_field(rng, shape, 8.0)
    variant = rng.choice(["classic", "solid", "non_enhancing"], p=[0.7, 0.15, 0.15])
    rim = rng.uniform(2.0, 5.0) / float(radii.mean())
    core, necrosis = _core_masks(rng, axes, str(variant), rim, 1.0)
    labels = np.where(d < 1.0, Label.ED, 0).astype(np.uint8)
    labels[core] = Label.ET
    labels[core & necrosis] = Label.NCR
    return labels


def soft_tumour(rng: np.random.Generator, labels: np.ndarray, zoom: float) -> np.ndarray:
    """Randomly flipped, rotated (+-25 deg), scaled (``zoom`` times 0.9-1.1 per axis) and elastically deformed
    soft memberships of ``labels`` (uint8 box): float32 (3, tx, ty, tz), channels NCR, ED, ET, sum <= 1."""
    for axis in range(3):
        if rng.random() < 0.5:
            labels = np.flip(labels, axis)
    onehot = torch.from_numpy(np.stack([labels == k for k in (Label.NCR, Label.ED, Label.ET)]).astype(np.float32))
    matrix = random_rotation(rng, 25.0) @ np.diag(1.0 / (zoom * rng.uniform(0.9, 1.1, 3)))  # output -> source voxels
    size_in = np.array(labels.shape, dtype=float)
    points = np.argwhere(labels > 0)[::5] - (size_in - 1) / 2.0
    extent = 2 * np.abs(points @ np.linalg.inv(matrix).T).max(axis=0)  # the transformed tumour's box
    shape = tuple(int(n) for n in np.ceil(extent) + 6)  # + elastic displacement (<= 1.5 voxels sd) + border
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0 for n in shape]
    axes = [axes[0].view(-1, 1, 1), axes[1].view(1, -1, 1), axes[2].view(1, 1, -1)]
    grid = torch.empty((1, *shape, 3), dtype=torch.float32)  # grid_sample units, (z, y, x) order
    for i in range(3):
        scale = 2.0 / (size_in[i] - 1)
        row = matrix[i] * scale
        elastic = torch.from_numpy(_smooth_field(rng, shape, 10.0)) * float(rng.uniform(0.0, 1.5) * scale)
        grid[0, ..., 2 - i] = float(row[0]) * axes[0] + float(row[1]) * axes[1] + float(row[2]) * axes[2] + elastic
    return F.grid_sample(onehot.unsqueeze(0), grid, mode="bilinear", align_corners=True)[0].numpy()


def place(soft: np.ndarray, centre: np.ndarray, probs: np.ndarray, box: tuple[slice, ...]) -> tuple[
        tuple[slice, ...], np.ndarray]:
    """Paste ``soft`` (3, tx, ty, tz) centred on ``centre`` (full-grid voxels) into the output ``box``.

    Oedema is weighted by the parenchyma fraction (GM + WM), the core by the brain fraction, read from
    ``probs`` (3, bx, by, bz, CSF/GM/WM) of the box. Returns (slices into the box, float32 (3, ...) memberships).
    """
    start = np.round(centre - (np.array(soft.shape[1:]) - 1) / 2.0).astype(int) - [s.start for s in box]
    box_shape = np.array(probs.shape[1:])
    lo, hi = np.maximum(start, 0), np.minimum(start + soft.shape[1:], box_shape)
    if np.any(hi <= lo):
        return (slice(0, 0),) * 3, np.zeros((3, 0, 0, 0), np.float32)
    inner = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    src = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start, strict=True))
    tumour = soft[(slice(None), *src)].copy()
    local = probs[(slice(None), *inner)]
    brain = local.sum(axis=0)
    tumour[[0, 2]] *= brain
    tumour[1] *= local[1] + local[2]
    return inner, tumour
