"""Simulated native scans from a real BraTS-space case, with the true transforms, to measure preparation.

``simulate_native`` puts the SRI24 head (scaled to each modality's brain intensity) around the case's
skull-stripped brain, moves the head by a random affine (the patient in the scanner), moves each non-T1c sequence
by a further small rigid motion, and samples every modality on its own grid (in-plane spacing, thick slices
averaged from 1 mm, its own matrix). ``registration_error_mm`` compares an estimated atlas -> native T1c
transform with the true one over the brain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from htcnns.inference.cases import find_cases
from htcnns.labels import MODALITIES

#: (in-plane spacing mm, slice thickness mm) per modality: different grids, thick slices.
NATIVE_GRIDS = {"t1c": (0.9, 2.0), "t1n": (1.0, 5.0), "t2w": (0.7, 5.0), "t2f": (0.9, 6.0)}
FIELD_OF_VIEW_MM = (230.0, 230.0, 170.0)


@dataclass(frozen=True)
class NativeSimulation:
    """Native images per modality, and the true transform from native T1c points to BraTS points."""

    images: Mapping[str, sitk.Image]
    native_to_brats: sitk.AffineTransform


def brats_space_images(folder: Path, head: sitk.Image) -> dict[str, sitk.Image]:
    """The four modalities of the BraTS-space case in ``folder`` on the atlas voxel grid (the same world grid;
    BraTS headers order their voxels differently)."""
    (case,) = find_cases(folder)
    return {m: sitk.Resample(sitk.ReadImage(str(case.paths[m]), sitk.sitkFloat32), head, sitk.Transform(),
                             sitk.sitkNearestNeighbor, 0.0) for m in MODALITIES}


def random_affine(rng: np.random.Generator, centre: tuple[float, ...], degrees: float, shift_mm: float,
                  scale: float) -> sitk.AffineTransform:
    """A random affine about ``centre``: rotation up to ``degrees`` per axis, translation up to ``shift_mm`` per
    axis, per-axis scaling within 1 +- ``scale``."""
    angles = np.radians(rng.uniform(-degrees, degrees, 3))
    rotation = sitk.Euler3DTransform(centre, *angles)
    matrix = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.diag(rng.uniform(1 - scale, 1 + scale, 3))
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation(rng.uniform(-shift_mm, shift_mm, 3).tolist())
    return affine


def with_skull(images: Mapping[str, sitk.Image], head: sitk.Image, atlas_brain: sitk.Image) -> dict[str, sitk.Image]:
    """Each BraTS-space modality with the atlas head (scaled to the modality's brain median) outside its brain;
    where the atlas brain reaches beyond the case's brain, CSF (the 2nd percentile of the brain, the 99th on T2)."""
    head_array = sitk.GetArrayViewFromImage(head)
    atlas_mask = ndimage.binary_dilation(sitk.GetArrayViewFromImage(atlas_brain) > 0, iterations=2)
    head_median = float(np.median(head_array[atlas_mask]))
    out = {}
    for modality, image in images.items():
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        brain = array != 0
        values = array[brain]
        csf = np.percentile(values, 99 if modality == "t2w" else 2)
        outside = np.where(atlas_mask, csf, head_array * float(np.median(values)) / head_median)
        filled = sitk.GetImageFromArray(np.where(brain, array, outside).astype(np.float32))
        filled.CopyInformation(image)
        out[modality] = filled
    return out


def native_grid(centre: np.ndarray, in_plane: float, thickness: float) -> sitk.Image:
    """An empty axial grid of ``FIELD_OF_VIEW_MM`` centred on ``centre`` with 1 mm slices (averaged later)."""
    spacing = (in_plane, in_plane, 1.0)
    size = [int(round(f / s)) for f, s in zip(FIELD_OF_VIEW_MM, spacing, strict=True)]
    size[2] -= size[2] % int(thickness)
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin((centre - np.array(size) * np.array(spacing) / 2).tolist())
    return grid


def thick_slices(image: sitk.Image, thickness: int) -> sitk.Image:
    """Average every ``thickness`` 1 mm slices into one (partial-volume thick slices)."""
    array = sitk.GetArrayFromImage(image)  # z, y, x
    z = array.shape[0] // thickness
    thick = array[: z * thickness].reshape(z, thickness, *array.shape[1:]).mean(axis=1)
    out = sitk.GetImageFromArray(thick.astype(np.float32))
    spacing = image.GetSpacing()
    out.SetSpacing((spacing[0], spacing[1], spacing[2] * thickness))
    out.SetDirection(image.GetDirection())
    out.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, (thickness - 1) / 2)))
    return out


def simulate_native(images: Mapping[str, sitk.Image], head: sitk.Image, atlas_brain: sitk.Image,
                    seed: int) -> NativeSimulation:
    """Native scans of a BraTS-space case (``images``: modality -> skull-stripped image on the BraTS grid)."""
    rng = np.random.default_rng(seed)
    skull = with_skull(images, head, atlas_brain)
    centre = np.array(head.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in head.GetSize()]))
    head_pose = random_affine(rng, tuple(centre), 12.0, 20.0, 0.06)
    native = {}
    for modality in MODALITIES:
        in_plane, thickness = NATIVE_GRIDS[modality]
        pose = head_pose if modality == "t1c" else sitk.CompositeTransform(
            [head_pose, random_affine(rng, tuple(centre), 3.0, 3.0, 0.0)])
        fine = sitk.Resample(skull[modality], native_grid(centre, in_plane, thickness), pose, sitk.sitkLinear, 0.0)
        native[modality] = thick_slices(fine, int(thickness))
    return NativeSimulation(native, head_pose)


def registration_error_mm(atlas_to_native: sitk.Transform, truth: NativeSimulation, brain: sitk.Image,
                          step: int = 4) -> float:
    """Mean distance (mm) between the estimated and the true native T1c position of brain voxels (every
    ``step``-th voxel per axis) of the BraTS grid."""
    inverse = truth.native_to_brats.GetInverse()
    mask = sitk.GetArrayViewFromImage(brain)[::step, ::step, ::step] > 0
    z, y, x = (axis * step for axis in np.nonzero(mask))
    errors = []
    for index in zip(x.tolist(), y.tolist(), z.tolist(), strict=True):
        point = brain.TransformIndexToPhysicalPoint(index)
        errors.append(np.linalg.norm(np.subtract(atlas_to_native.TransformPoint(point),
                                                 inverse.TransformPoint(point))))
    return float(np.mean(errors))
