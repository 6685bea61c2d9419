"""Simulated native scans of real whole heads, to measure atlas registration and skull stripping on skulls, scalps,
eyes and necks that are not the atlas's.

``native_sim`` puts the SRI24 skull around a BraTS brain, so registration meets the atlas's own head again.
Here the head is one of SynthSeg's 20 whole-head label maps of real subjects (``../shared/data/
synthseg-label-maps``, 1 mm, brain labels FreeSurfer's, extra-cerebral labels >= 500, the neck included): each
label gets a mean intensity per modality (:data:`TISSUE_MEANS`, :data:`EXTRA_CEREBRAL`, times a random +-15 % per
label and case), then blur, a smooth bias field and magnitude noise; the head gets a random rigid pose and each
sequence its own grid and slice thickness, as in ``native_sim``. The truth is the label map's own brain, stripped
as BraTS strips (``anatomies.stripped_brain``), on the native T1c grid. There is no tumour: these heads measure
the brain mask, not the segmentation.

SynthSeg does not name its extra-cerebral labels; their roles below were inferred from where they lie (distance
to the parenchyma, height), e.g. 515 the 6 mm shell outside the CSF is the skull, 511 the layer outside it the
scalp, 506 at eye height the globes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from htcnns.evaluation.native_sim import NATIVE_GRIDS, native_grid, random_affine, thick_slices
from htcnns.labels import MODALITIES
from htcnns.training.synthseg.anatomies import CSF, GM, WM, class_lookup, class_tissues, stripped_brain

#: Mean intensity relative to white matter, per modality (MODALITIES order: t1n, t1c, t2w, t2f), of brain tissues.
TISSUE_MEANS = {CSF: (0.3, 0.3, 2.6, 0.3), GM: (0.72, 0.75, 1.3, 1.2), WM: (1.0, 1.0, 1.0, 1.0)}
#: The same for SynthSeg's extra-cerebral labels (roles inferred from their position).
EXTRA_CEREBRAL = {
    515: (0.12, 0.12, 0.15, 0.12),  # skull: the shell ~6 mm from the parenchyma
    516: (0.9, 0.9, 1.0, 0.9),  # marrow / fat next to the skull
    514: (0.5, 1.3, 0.6, 0.6),  # dura and sinuses: enhancing on T1c
    511: (1.15, 1.15, 1.2, 1.1),  # scalp (fat): bright on every sequence here
    507: (0.6, 0.6, 0.7, 0.7),  # soft tissue, muscle, neck
    506: (0.3, 0.3, 2.5, 0.3),  # the globes (vitreous: fluid)
    509: (0.05, 0.05, 0.05, 0.05),  # below the eyes, far out: the sinuses (air)
    502: (0.2, 0.2, 0.3, 0.2),
    512: (0.5, 0.5, 0.8, 0.6),
}
OTHER_EXTRA_CEREBRAL = (0.6, 0.6, 0.8, 0.7)
HEAD_FOV_MM = (230.0, 230.0, 220.0)
"""The T1c covers the head and part of the neck (its centre 20 mm below the brain's); the others ``native_sim``'s."""
NOISE = 0.03  # of white matter
BIAS = 0.15  # log amplitude of the smooth bias field


@dataclass(frozen=True)
class HeadSimulation:
    """Native images per modality of one real head and its brain on the native T1c grid (uint8 0/1)."""

    name: str
    images: dict[str, sitk.Image]
    brain: sitk.Image


def label_means(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 (4, max label + 1): each label's mean per modality, each label and modality times 1 +- 15 %."""
    tissues = class_tissues()[class_lookup()[np.arange(256)]]
    table = np.zeros((len(MODALITIES), int(labels.max()) + 1), np.float32)
    for label in np.unique(labels):
        if label == 0:
            continue
        if label < 256 and tissues[label]:
            means = TISSUE_MEANS[int(tissues[label])]
        else:
            means = EXTRA_CEREBRAL.get(int(label), OTHER_EXTRA_CEREBRAL)
        table[:, label] = np.array(means) * rng.uniform(0.85, 1.15, len(MODALITIES))
    return table


def bias_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field, exp of a 4^3 random grid upsampled (cubic)."""
    coarse = rng.uniform(-BIAS, BIAS, (4, 4, 4))
    return np.exp(ndimage.zoom(coarse, [n / 4 for n in shape], order=3)).astype(np.float32)


def render(labels: sitk.Image, rng: np.random.Generator) -> dict[str, sitk.Image]:
    """The four modalities of a label map on its own grid (white matter about 1), blurred and bias-corrupted."""
    array = sitk.GetArrayViewFromImage(labels).astype(np.int64)
    means = label_means(array, rng)
    out = {}
    for channel, modality in enumerate(MODALITIES):
        image = ndimage.gaussian_filter(means[channel][array], 0.6) * bias_field(rng, array.shape)
        out[modality] = sitk.GetImageFromArray(image.astype(np.float32))
        out[modality].CopyInformation(labels)
    return out


def _with_noise(image: sitk.Image, rng: np.random.Generator) -> sitk.Image:
    """Magnitude (Rician) noise of ``NOISE`` everywhere, air included."""
    array = sitk.GetArrayFromImage(image)
    real, imaginary = (rng.normal(0, NOISE, array.shape) for _ in range(2))
    noisy = sitk.GetImageFromArray(np.hypot(array + real, imaginary).astype(np.float32))
    noisy.CopyInformation(image)
    return noisy


def simulate_head(path: Path, seed: int) -> HeadSimulation:
    """Native scans of the SynthSeg head label map ``path``: random contrast, pose (+-15 deg, +-15 mm), per-sequence
    motion (+-3 deg, +-3 mm) and grids; intensities scaled to a random scanner range."""
    rng = np.random.default_rng(seed)
    labels = sitk.ReadImage(str(path), sitk.sitkUInt16)
    array = sitk.GetArrayViewFromImage(labels)
    brain = stripped_brain(np.where(array < 256, array, 0).astype(np.uint8))
    brain_image = sitk.GetImageFromArray(brain.astype(np.float32))
    brain_image.CopyInformation(labels)
    centre = np.array(labels.TransformContinuousIndexToPhysicalPoint(
        np.argwhere(brain).mean(axis=0)[::-1].tolist()))
    images = render(labels, rng)
    head_pose = random_affine(rng, tuple(centre), 15.0, 15.0, 0.0)
    scanner = rng.uniform(300, 1200)
    native = {}
    for modality in MODALITIES:
        in_plane, thickness = NATIVE_GRIDS[modality]
        if modality == "t1c":
            grid, pose = native_grid(centre - (0, 0, 20), in_plane, thickness, HEAD_FOV_MM), head_pose
        else:
            grid = native_grid(centre, in_plane, thickness)
            pose = sitk.CompositeTransform([head_pose, random_affine(rng, tuple(centre), 3.0, 3.0, 0.0)])
        fine = sitk.Resample(images[modality], grid, pose, sitk.sitkLinear, 0.0)
        native[modality] = _with_noise(thick_slices(fine, int(thickness)), rng) * scanner
    true_brain = sitk.Resample(brain_image, native["t1c"], head_pose, sitk.sitkLinear, 0.0) > 0.5
    return HeadSimulation(path.name.split(".")[0], native, sitk.Cast(true_brain, sitk.sitkUInt8))


def tilted(image: sitk.Image, axis: tuple[float, float, float], degrees: float, centre: np.ndarray) -> sitk.Image:
    """``image`` turned by ``degrees`` about ``axis`` (LPS; (1, 0, 0): chin towards the chest for positive degrees)
    through the physical point ``centre``, by its header alone: the same voxels, the head placed otherwise."""
    turn = np.array(sitk.VersorTransform(axis, np.radians(degrees), centre.tolist()).GetMatrix()).reshape(3, 3)
    out = sitk.Image(image)
    out.SetDirection((turn @ np.array(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    out.SetOrigin((turn @ (np.array(image.GetOrigin()) - centre) + centre).tolist())
    return out
