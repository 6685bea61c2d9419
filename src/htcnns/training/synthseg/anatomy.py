"""Healthy anatomy: the SRI24 tissue probability maps (CSF, GM, WM) on the BraTS grid, randomly deformed.

The deformation maps each voxel of the output box to a point of the atlas: a random affine (rotation, scale,
shear) about the brain centre, plus a smooth elastic displacement, plus an optional radial mass effect around
the tumour. The probability maps are resampled with trilinear ``torch.nn.functional.grid_sample`` (3 channels
at once, 0.3-0.5 s for the brain box on 2 CPU threads; scipy ``map_coordinates`` took ~1.6 s per channel here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage

from htcnns.errors import InputError
from htcnns.training.phantoms import BRATS_SHAPE, _smooth_field

TISSUE_FILES = ("pbmap_csf.nii.gz", "pbmap_gm.nii.gz", "pbmap_wm.nii.gz")
"""Channel order of :attr:`Atlas.probs`: CSF, GM, WM."""


@dataclass(frozen=True)
class Atlas:
    """SRI24 tissue probabilities cropped to the brain, in RAS+ canonical voxel order.

    probs: float32 torch (1, 3, x, y, z), CSF/GM/WM, normalised to sum 1 inside the brain, 0 outside.
    lo: int (3,), voxel index of ``probs[..., 0, 0, 0]`` on the full 240x240x155 grid.
    affine: float64 (4, 4), voxel-to-world (RAS+, mm) of the full grid.
    wm_voxels: int (n, 3), full-grid voxels with WM probability >= 0.8 and >= 12 mm inside the brain.
    fossa_voxels: int (k, 3), full-grid parenchyma voxels (GM + WM >= 0.9, >= 8 mm inside the brain) of the
        posterior fossa: the lowest 30 % of the brain's height and its posterior 55 % (cerebellum, brainstem).
    surface: int (m, 3), full-grid voxels on the brain's surface (a subsample), to bound the deformed brain.
    """

    probs: torch.Tensor
    lo: np.ndarray
    affine: np.ndarray
    wm_voxels: np.ndarray
    fossa_voxels: np.ndarray
    surface: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """Centre of the atlas brain box, full-grid voxel coordinates, float (3,)."""
        return self.lo + (np.array(self.probs.shape[2:]) - 1) / 2.0


def load_canonical(path: Path) -> nib.Nifti1Image:
    """A NIfTI image squeezed to 3-D and reoriented to RAS+ (the atlas headers differ between files)."""
    return nib.as_closest_canonical(nib.funcs.squeeze_image(nib.load(path)))


def load_atlas(folder: Path) -> Atlas:
    """Load the three SRI24 probability maps of ``folder`` (``sri24-brats-space``), crop them to the brain.

    Raises:
        InputError: if a file is missing.
    """
    missing = [name for name in TISSUE_FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(f"SRI24 atlas not found: {folder} lacks {', '.join(missing)}; pass --atlas with the "
                         "folder that holds sri24-brats-space/ (or set HTCNNS_SHARED_DATA)")
    images = [load_canonical(folder / name) for name in TISSUE_FILES]
    probs = np.stack([np.asarray(img.dataobj, dtype=np.float32) for img in images])
    return atlas_from_probs(probs, images[0].affine)


def atlas_from_probs(probs: np.ndarray, affine: np.ndarray) -> Atlas:
    """An :class:`Atlas` from CSF/GM/WM fractions float32 (3, 240, 240, 155), RAS+, and the grid's ``affine``
    (the SRI24 maps of :func:`load_atlas`, or one-hot tissues of a registered anatomy)."""
    total = probs.sum(axis=0)
    brain = total > 0.5
    probs = np.where(brain, probs / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    present = np.argwhere(brain)
    lo, hi = np.maximum(present.min(axis=0) - 2, 0), np.minimum(present.max(axis=0) + 3, brain.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    depth = ndimage.distance_transform_edt(brain[crop])
    wm = np.argwhere((probs[2][crop] >= 0.8) & (depth >= 12)) + lo
    surface = np.argwhere((depth > 0) & (depth < 1.5))[::7] + lo
    tensor = torch.from_numpy(np.ascontiguousarray(probs[(slice(None), *crop)])).unsqueeze(0)
    return Atlas(tensor, lo, affine, wm, _fossa_voxels(probs[(slice(None), *crop)], depth) + lo, surface)


def _fossa_voxels(probs: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Cropped-grid voxels of the posterior fossa (RAS+: low z, low y) that can host a tumour centre."""
    size = np.array(depth.shape)
    y = np.arange(size[1]).reshape(1, -1, 1) < 0.55 * size[1]
    z = np.arange(size[2]).reshape(1, 1, -1) < 0.3 * size[2]
    return np.argwhere((probs[1] + probs[2] >= 0.9) & (depth >= 8) & y & z)


@dataclass(frozen=True)
class Warp:
    """Output-to-atlas voxel mapping ``a = matrix @ (x - out_centre) + atlas_centre + elastic(x)``.

    matrix: float (3, 3); out_centre, atlas_centre: float (3,) full-grid voxels; elastic_mm: peak displacement.
    """

    matrix: np.ndarray
    out_centre: np.ndarray
    atlas_centre: np.ndarray
    elastic_mm: float

    def to_output(self, atlas_points: np.ndarray) -> np.ndarray:
        """Full-grid output voxel coordinates, float (n, 3), of atlas points (n, 3), elastic part ignored."""
        return (atlas_points - self.atlas_centre) @ np.linalg.inv(self.matrix).T + self.out_centre


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Rotation matrix (3, 3): the product of rotations about x, y and z by angles uniform in +-``max_deg``."""
    matrix = np.eye(3)
    for axis, angle in enumerate(np.deg2rad(rng.uniform(-max_deg, max_deg, 3))):
        i, j = [a for a in range(3) if a != axis]
        step = np.eye(3)
        step[i, i] = step[j, j] = np.cos(angle)
        step[i, j], step[j, i] = -np.sin(angle), np.sin(angle)
        matrix = matrix @ step
    return matrix


def draw_warp(rng: np.random.Generator, atlas: Atlas) -> Warp:
    """Random affine about the brain centre: rotations +-10 deg, scale 0.9-1.08, shear +-0.03, shift +-4 voxels."""
    rotation = random_rotation(rng, 10.0)
    shear = np.eye(3) + np.triu(rng.uniform(-0.03, 0.03, (3, 3)), k=1)
    zoom = 1.0 / (rng.uniform(0.9, 1.08) * rng.uniform(0.96, 1.04, 3))  # output voxels -> atlas voxels
    matrix = rotation @ shear @ np.diag(zoom)
    out_centre = atlas.centre + rng.uniform(-4, 4, 3)
    return Warp(matrix, out_centre, atlas.centre, float(rng.uniform(0.0, 4.0)))


def output_box(warp: Warp, atlas: Atlas, shape: tuple[int, int, int] = BRATS_SHAPE) -> tuple[slice, ...]:
    """The box of the output grid that the deformed atlas brain can reach, clipped to ``shape``."""
    mapped = warp.to_output(atlas.surface.astype(float))
    lo = np.clip(np.floor(mapped.min(axis=0) - warp.elastic_mm - 2), 0, shape).astype(int)
    hi = np.clip(np.ceil(mapped.max(axis=0) + warp.elastic_mm + 3), 0, shape).astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _normalisation(atlas: Atlas) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per atlas axis taking atlas voxels to grid_sample's [-1, 1] over ``atlas.probs``."""
    scale = 2.0 / (np.array(atlas.probs.shape[2:], dtype=float) - 1)
    return scale, -atlas.lo * scale - 1.0


def sampling_grid(rng: np.random.Generator, warp: Warp, atlas: Atlas, box: tuple[slice, ...]) -> torch.Tensor:
    """Where every output voxel of ``box`` reads the atlas: float32 torch (1, bx, by, bz, 3), in grid_sample's
    normalised units and (z, y, x) order (the last axis of ``atlas.probs`` first)."""
    shape = tuple(s.stop - s.start for s in box)
    scale, offset = _normalisation(atlas)
    axes = [torch.arange(s.start, s.stop, dtype=torch.float32) - float(c) for s, c in zip(box, warp.out_centre,
                                                                                          strict=True)]
    axes = [axes[0].view(-1, 1, 1), axes[1].view(1, -1, 1), axes[2].view(1, 1, -1)]
    grid = torch.empty((1, *shape, 3), dtype=torch.float32)
    for i in range(3):
        row = warp.matrix[i] * scale[i]
        linear = float(warp.atlas_centre[i] * scale[i] + offset[i]) + sum(float(row[j]) * axes[j] for j in range(3))
        if warp.elastic_mm > 0:  # the field has ~unit variance: peak displacement ~ elastic_mm
            field = torch.from_numpy(_smooth_field(rng, shape, 24.0))
            linear = linear + field * float(warp.elastic_mm / 2.5 * scale[i])
        grid[0, ..., 2 - i] = linear
    return grid


def add_mass_effect(grid: torch.Tensor, box: tuple[slice, ...], warp: Warp, atlas: Atlas,
                    lesion: tuple[np.ndarray, float, float]) -> None:
    """Push anatomy away from a lesion, in place on ``grid`` (from :func:`sampling_grid`).

    ``lesion`` is (centre in full-grid output voxels, radius, push), radius and push in voxels. Tissue seen
    at distance r came from r - u(r): u = push * r / radius inside the radius, push * exp(-((r - radius) /
    radius)^2) outside (monotone for push < 0.5 radius), ignored beyond 3.5 radii.
    """
    centre, radius, push = lesion
    reach = 3.5 * radius
    lo = np.maximum(np.floor(centre - reach).astype(int), [s.start for s in box])
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, [s.stop for s in box])
    if np.any(hi <= lo) or push <= 0:
        return
    offsets = [torch.arange(a, b, dtype=torch.float32) - float(c) for a, b, c in zip(lo, hi, centre, strict=True)]
    d = [offsets[0].view(-1, 1, 1), offsets[1].view(1, -1, 1), offsets[2].view(1, 1, -1)]
    r = torch.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2).clamp_min(1e-3)
    u_over_r = torch.where(r < radius, push / radius, push * torch.exp(-(((r - radius) / radius) ** 2)) / r)
    sub = tuple(slice(int(a - s.start), int(b - s.start)) for a, b, s in zip(lo, hi, box, strict=True))
    scale, _ = _normalisation(atlas)
    for i in range(3):
        row = warp.matrix[i] * scale[i]
        grid[(0, *sub, 2 - i)] -= (float(row[0]) * d[0] + float(row[1]) * d[1] + float(row[2]) * d[2]) * u_over_r


def csf_nearness(probs: np.ndarray) -> np.ndarray:
    """CSF fraction of ``probs`` (3, ...) smoothed over about 2 voxels, float32: where sulci, the surface and the
    ventricles are near (read by :func:`add_cortical_folds` and :func:`draw_vessels`)."""
    return ndimage.gaussian_filter(probs[0], 2.0)


def add_cortical_folds(rng: np.random.Generator, probs: np.ndarray, near_csf: np.ndarray) -> None:
    """Give the cortex the sulci and gyri an average atlas has blurred away, in place on ``probs`` (3, ...).

    In the cortical ribbon (GM near CSF, from :func:`csf_nearness`), a fine random field (correlation 2-3.5
    voxels) moves fraction between GM and CSF: where it is high, GM becomes CSF (a sulcus); where low, CSF becomes
    GM (a gyrus). Ventricles (CSF without GM) and white matter are left alone; each voxel's fractions keep their sum.
    """
    csf, gm, wm = probs
    ribbon = np.clip(3.0 * near_csf, 0.0, 1.0) * (1.0 - wm)
    field = _smooth_field(rng, gm.shape, float(rng.uniform(2.0, 3.5)))
    gain = np.float32(rng.uniform(1.0, 2.5))
    to_csf = np.clip(gain * (field - 0.5), 0.0, 1.0) * gm * ribbon
    to_gm = np.clip(gain * (-field - 0.5), 0.0, 1.0) * csf * np.clip(4.0 * gm, 0.0, 1.0) * ribbon
    csf += to_csf - to_gm
    gm += to_gm - to_csf


def draw_vessels(rng: np.random.Generator, near_csf: np.ndarray) -> np.ndarray:
    """Fraction of blood vessel in each voxel, float32 (bx, by, bz), kept where :func:`csf_nearness` is high.

    Vessels are tubes (about 1-5 % of the voxels) along the curves where two random fields (correlation 10-16
    voxels) are both zero, near CSF (sulcal and surface vessels, choroid plexus). With gadolinium they are
    bright on t1c: without them a network calls every bright t1c structure enhancing tumour.
    """
    cell = float(rng.uniform(10.0, 16.0))
    first, second = _smooth_field(rng, near_csf.shape, cell), _smooth_field(rng, near_csf.shape, cell)
    width = np.float32(rng.uniform(0.1, 0.25))
    tube = np.clip(2.0 - (first * first + second * second) / (width * width), 0.0, 1.0)
    return tube * np.clip(6.0 * near_csf, 0.0, 1.0)


def skull_strip(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """Voxels outside the brain after a random skull stripping, bool (bx, by, bz), from ``probs`` (3, ...).

    Stripping tools hug the cortex: of the brain (fractions summing to >= 0.5), CSF more than 0-3 voxels
    from the parenchyma (GM + WM >= 0.5) is removed, except where enclosed (ventricles stay).
    """
    brain = probs.sum(axis=0) >= 0.5
    margin = int(rng.integers(0, 4))
    parenchyma = (probs[1] + probs[2]) >= 0.5
    near = ndimage.binary_dilation(parenchyma, iterations=margin) if margin else parenchyma
    return ~ndimage.binary_fill_holes(brain & near) | ~brain


def deform(atlas: Atlas, grid: torch.Tensor) -> np.ndarray:
    """Tissue probabilities read through ``grid`` (from :func:`sampling_grid`): float32 (3, bx, by, bz)."""
    return F.grid_sample(atlas.probs, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0].numpy()
