"""Simulated native scans from a real BraTS-space case, with the true transforms, to measure preparation.

``simulate_native`` fits the SRI24 head to the case's skull-stripped brain (an affine overlaying the atlas brain
mask on the case's, ``fit_atlas``), puts it (scaled to each modality's brain intensity) around that brain, moves the
head by a random affine (the patient in the scanner), moves each non-T1c sequence by a further small rigid motion,
and samples every modality on its own grid (in-plane spacing, thick slices averaged from 1 mm, its own matrix).
The head is fitted so that the case's brain lies inside the skull, as in a real head; a perfect registration to the
atlas therefore undoes the fit as well as the pose, so the truth for it is ``NativeSimulation.native_to_atlas``.
``registration_error_mm`` compares an estimated atlas -> native T1c transform with that truth over the brain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from htcnns.inference.cases import find_cases
from htcnns.inference.prepare import grid_centre, voxels_to_world
from htcnns.labels import MODALITIES

#: (in-plane spacing mm, slice thickness mm) per modality: different grids, thick slices.
NATIVE_GRIDS = {"t1c": (0.9, 2.0), "t1n": (1.0, 5.0), "t2w": (0.7, 5.0), "t2f": (0.9, 6.0)}
FIELD_OF_VIEW_MM = (230.0, 230.0, 170.0)
#: ``fit_atlas`` clips the brain masks' signed distances here (mm): near an overlap, with a gradient at the edge.
FIT_CLIP_MM = 5.0


@dataclass(frozen=True)
class NativeSimulation:
    """Native images per modality and the true transforms.

    native_to_brats: native T1c points -> the case's BraTS points (the head pose).
    brats_to_atlas: the case's BraTS points -> atlas points (``fit_atlas``; its inverse moved the head onto the brain).
    poses: modality -> its native points -> the case's BraTS points (the T1c's is ``native_to_brats``).
    """

    images: Mapping[str, sitk.Image]
    native_to_brats: sitk.AffineTransform
    brats_to_atlas: sitk.AffineTransform
    poses: Mapping[str, sitk.Transform] = field(default_factory=dict)

    @property
    def native_to_atlas(self) -> sitk.Transform:
        """Native T1c points -> atlas points: what a perfect registration of the T1c to the atlas head finds."""
        return sitk.CompositeTransform([self.brats_to_atlas, self.native_to_brats])

    def moved_to_atlas(self, image: sitk.Image) -> sitk.Image:
        """An image of the case's BraTS grid moved (linear) to where the atlas registration puts it, same grid."""
        return sitk.Resample(image, image, self.brats_to_atlas.GetInverse(), sitk.sitkLinear, 0.0)

    def in_atlas_space(self, mask: sitk.Image) -> np.ndarray:
        """A mask of the case's BraTS grid moved to where the atlas registration puts it (linear, > 0.5), bool
        (z, y, x)."""
        return sitk.GetArrayFromImage(self.moved_to_atlas(sitk.Cast(mask, sitk.sitkFloat32))) > 0.5

    def in_atlas_space_perfectly(self, modality: str, grid: sitk.Image) -> sitk.Image:
        """The native ``modality`` resampled (linear) onto the atlas ``grid`` through the true transforms: what a
        perfect preparation would resample before skull stripping."""
        to_atlas = sitk.CompositeTransform([self.brats_to_atlas, self.poses[modality]])
        return sitk.Resample(self.images[modality], grid, to_atlas.GetInverse(), sitk.sitkLinear, 0.0,
                             sitk.sitkFloat32)


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


def _clipped_distance(mask: sitk.Image) -> sitk.Image:
    """Signed distance (mm, negative inside) to the mask's edge, clipped at +-``FIT_CLIP_MM``."""
    distance = sitk.SignedMaurerDistanceMap(mask > 0, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.Clamp(distance, sitk.sitkFloat32, -FIT_CLIP_MM, FIT_CLIP_MM)


def fit_atlas(atlas_brain: sitk.Image, brain: sitk.Image) -> sitk.AffineTransform:
    """The affine taking the case's points to atlas points that lays the atlas brain mask over the case's ``brain``
    mask (same grid): centres of mass, then mean squares of the clipped signed distances, 4 and 2 mm levels."""
    fixed, moving = _clipped_distance(brain), _clipped_distance(atlas_brain)
    start = sitk.CenteredTransformInitializer(sitk.Cast(brain > 0, sitk.sitkFloat32),
                                              sitk.Cast(atlas_brain > 0, sitk.sitkFloat32), sitk.AffineTransform(3),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(start, inPlace=True)
    method.Execute(fixed, moving)
    return sitk.AffineTransform(start)


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


def native_grid(centre: np.ndarray, in_plane: float, thickness: float,
                field_of_view: tuple[float, ...] = FIELD_OF_VIEW_MM) -> sitk.Image:
    """An empty axial grid of ``field_of_view`` (mm) centred on ``centre`` with 1 mm slices (averaged later)."""
    spacing = (in_plane, in_plane, 1.0)
    size = [int(round(f / s)) for f, s in zip(field_of_view, spacing, strict=True)]
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


def simulate_native(images: Mapping[str, sitk.Image], head: sitk.Image, atlas_brain: sitk.Image, seed: int,
                    grids: Mapping[str, tuple[float, float]] = NATIVE_GRIDS) -> NativeSimulation:
    """Native scans of a BraTS-space case (``images``: modality -> skull-stripped image on the BraTS grid), the
    atlas ``head`` fitted to its brain first (``fit_atlas``; deterministic, so ``seed`` alone sets the scans);
    ``grids``: modality -> (in-plane spacing, slice thickness) mm, the thickness a whole number."""
    rng = np.random.default_rng(seed)
    fit = fit_atlas(atlas_brain, images["t1c"] != 0)
    skull = with_skull(images, *(sitk.Resample(atlas, atlas, fit, interpolator, 0.0)
                                 for atlas, interpolator in ((head, sitk.sitkLinear),
                                                             (atlas_brain, sitk.sitkNearestNeighbor))))
    centre = grid_centre(head)
    head_pose = random_affine(rng, tuple(centre), 12.0, 20.0, 0.06)
    native, poses = {}, {}
    for modality in MODALITIES:
        in_plane, thickness = grids[modality]
        poses[modality] = head_pose if modality == "t1c" else sitk.CompositeTransform(
            [head_pose, random_affine(rng, tuple(centre), 3.0, 3.0, 0.0)])
        fine = sitk.Resample(skull[modality], native_grid(centre, in_plane, thickness), poses[modality],
                             sitk.sitkLinear, 0.0)
        native[modality] = thick_slices(fine, int(thickness))
    return NativeSimulation(native, head_pose, fit, poses)


def registration_error_mm(atlas_to_native: sitk.Transform, truth: NativeSimulation, brain: sitk.Image,
                          step: int = 4) -> float:
    """Mean distance (mm) between the estimated and the true native T1c position of the case's ``brain`` voxels
    (every ``step``-th voxel per axis of its BraTS grid); the estimate takes them through their atlas position."""
    inverse = truth.native_to_brats.GetInverse()
    errors = []
    for point in mask_points(brain, step).tolist():
        estimate = atlas_to_native.TransformPoint(truth.brats_to_atlas.TransformPoint(point))
        errors.append(np.linalg.norm(np.subtract(estimate, inverse.TransformPoint(point))))
    return float(np.mean(errors))


def mask_points(mask: sitk.Image, step: int = 4) -> np.ndarray:
    """Physical points (n x 3) of ``mask``'s non-zero voxels, every ``step``-th voxel per axis."""
    indices = np.argwhere(sitk.GetArrayViewFromImage(mask)[::step, ::step, ::step])[:, ::-1] * step
    return voxels_to_world(mask, indices)
