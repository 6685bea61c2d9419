"""Real anatomies on the BraTS grid: SynthSeg's 20 whole-head label maps, affinely registered to the SRI24 brain.

Each ``training_seg_XX.nii.gz`` (256^3, 1 mm, LIA, FreeSurfer labels; >= 500 extra-cerebral) is skull-stripped
as BraTS scans are (extra-cerebral labels and CSF more than 3 voxels from the parenchyma set to 0, ventricles
kept: :func:`stripped_brain`); that brain mask is registered to the SRI24 brain mask (``t1_stripped.nii.gz`` > 0)
with SimpleITK: moments initialisation, then an affine transform that minimises the mean squared difference of
the two masks averaged to 4 mm and smoothed (sigma 4 mm). The label map is resampled with nearest neighbour onto
the BraTS grid (240x240x155, RAS+). Registration takes seconds, so the result is cached as a compressed ``.npz``
keyed by the source file's sha256 (:func:`cache_dir`).

Labels are grouped into the :data:`STRUCTURES` that get their own random intensity, each with the tissue
(1 CSF, 2 GM, 3 WM) it counts as. ``python -m htcnns.training.synthseg.anatomies`` registers (or reads) all of them and
prints the Dice of each registered brain mask with the SRI24 mask and the registration time.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage

from htcnns.errors import InputError
from htcnns.training.synthseg.anatomy import Atlas, atlas_from_probs, load_canonical

ANATOMY_DIR = "synthseg-label-maps"
TARGET = "sri24-brats-space/t1_stripped.nii.gz"
EXTRA_CEREBRAL = 500
"""FreeSurfer labels from this value up are outside the brain (skull, scalp, eyes, ...)."""
REGISTRATION = "strip3-affine-ms-4mm-v1"
"""Names the registration settings in the cache key: change it when they change."""
HELD_OUT_ANATOMIES = ("training_seg_19", "training_seg_20")
"""Anatomies that only validation cases use."""
COARSE = 4
"""Voxels (mm) averaged per axis before registration."""
STRIP_MM = 3
"""CSF kept around the parenchyma (voxels) in the registered brain, as BraTS skull stripping leaves it."""


@dataclass(frozen=True)
class Structure:
    """A group of FreeSurfer labels sharing one random intensity per modality.

    tissue: 1 CSF, 2 GM or 3 WM (the tissue map and the tumour placement see this); towards: the tissue its mean
    may move to. Its mean on a modality is ``m[tissue] + w * (m[towards] - m[tissue])`` with ``m`` the case's
    CSF/GM/WM means and ``w`` uniform in ``weight`` (rows t1n and t1c, t2w, t2f).
    """

    name: str
    labels: tuple[int, ...]
    tissue: int
    towards: int
    weight: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


CSF, GM, WM = 1, 2, 3
_FIXED = ((0.0, 0.0),) * 3
_VENTRICLE = ((-0.15, 0.6), (-0.1, 0.6), (-0.2, 0.7))  # from CSF towards GM: down to NCR-like values
STRUCTURES = (
    Structure("cerebral_wm", (2, 41, 85), WM, WM, _FIXED),  # 85 optic chiasm
    Structure("cortex", (3, 42), GM, GM, _FIXED),
    Structure("lateral_ventricles", (4, 5, 43, 44), CSF, GM, _VENTRICLE),
    Structure("ventricles_3_4_5", (14, 15, 72), CSF, GM, _VENTRICLE),
    Structure("csf", (24,), CSF, CSF, _FIXED),  # extra-ventricular CSF
    Structure("cerebellum_wm", (7, 46), WM, GM, ((0.0, 0.3), (0.0, 0.3), (0.0, 0.3))),
    Structure("cerebellum_cortex", (8, 47), GM, WM, ((-0.25, 0.25), (-0.25, 0.25), (-0.25, 0.25))),
    Structure("thalamus", (10, 49), GM, WM, ((0.35, 0.85), (0.3, 0.8), (0.2, 0.8))),
    Structure("caudate", (11, 50), GM, WM, ((0.1, 0.5), (0.0, 0.4), (0.0, 0.5))),
    Structure("putamen", (12, 51), GM, WM, ((0.2, 0.6), (0.3, 0.9), (0.2, 0.8))),
    Structure("pallidum", (13, 52), GM, WM, ((0.6, 1.05), (0.8, 1.5), (0.6, 1.3))),  # iron: T2-dark
    Structure("brainstem", (16,), WM, GM, ((0.0, 0.4), (0.1, 0.5), (0.1, 0.6))),
    Structure("hippocampus_amygdala", (17, 18, 53, 54), GM, WM, ((-0.2, 0.2), (-0.3, 0.1), (-0.4, 0.1))),
    Structure("accumbens", (26, 58), GM, WM, ((0.0, 0.4), (0.0, 0.4), (0.0, 0.4))),
    Structure("ventral_dc", (28, 60), WM, GM, ((0.1, 0.6), (0.1, 0.6), (0.1, 0.6))),
    # labels missing from labels-table.txt, next to the lateral ventricles (25/57, 136/137, 163/164) and vessels
    Structure("periventricular", (25, 57, 136, 137, 163, 164, 30, 62), WM, CSF, ((0.0, 0.5),) * 3),
)
"""Class k (1-based) of a structure map is ``STRUCTURES[k - 1]``; class 0 is outside the brain."""


VENTRICLES = ("lateral_ventricles", "ventricles_3_4_5")
"""Structures that skull stripping always keeps (real ventricles need not be enclosed by parenchyma)."""


def class_index(names: Sequence[str]) -> list[int]:
    """Structure classes (1-based) of the :data:`STRUCTURES` named ``names``."""
    return [k for k, structure in enumerate(STRUCTURES, start=1) if structure.name in names]


def class_lookup() -> np.ndarray:
    """uint8 (256,): FreeSurfer label -> structure class (0 for background, unknown and extra-cerebral labels)."""
    table = np.zeros(256, np.uint8)
    for k, structure in enumerate(STRUCTURES, start=1):
        table[list(structure.labels)] = k
    return table


def class_tissues() -> np.ndarray:
    """uint8 (1 + len(STRUCTURES),): structure class -> tissue (0 outside, 1 CSF, 2 GM, 3 WM)."""
    return np.array([0, *(s.tissue for s in STRUCTURES)], np.uint8)


def cache_dir() -> Path:
    """``$HTCNNS_CACHE/anatomies`` if ``HTCNNS_CACHE`` is set, else ``~/.cache/htcnns/anatomies``."""
    root = os.environ.get("HTCNNS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "htcnns") / "anatomies"


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of a RAS+ canonical array (axis-aligned ``affine``); its world is RAS, not ITK's LPS,
    consistently for every image here."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    image.SetSpacing([float(v) for v in np.diag(affine)[:3]])
    return image


def _coarse_mask(mask: np.ndarray, affine: np.ndarray, factor: int = COARSE) -> sitk.Image:
    """Brain fraction of ``factor``^3 voxel blocks of a bool mask, smoothed (sigma ``factor`` mm), as SimpleITK."""
    size = [n // factor * factor for n in mask.shape]
    blocks = mask[: size[0], : size[1], : size[2]].astype(np.float32)
    blocks = blocks.reshape(size[0] // factor, factor, size[1] // factor, factor, size[2] // factor, factor)
    coarse = affine.copy()
    coarse[:3, :3] *= factor
    coarse[:3, 3] += (factor - 1) / 2.0 * np.diag(affine)[:3]
    return sitk.SmoothingRecursiveGaussian(_to_sitk(blocks.mean(axis=(1, 3, 5)), coarse), float(factor))


def register_mask(moving: np.ndarray, moving_affine: np.ndarray, fixed: np.ndarray, fixed_affine: np.ndarray,
                  threads: int = 1) -> sitk.Transform:
    """The affine transform (fixed world -> moving world) aligning bool mask ``moving`` to bool mask ``fixed``."""
    fixed_image, moving_image = _coarse_mask(fixed, fixed_affine), _coarse_mask(moving, moving_affine)
    initial = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(threads)
    method.SetMetricAsMeanSquares()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed_image, moving_image)


def stripped_brain(labels: np.ndarray) -> np.ndarray:
    """The brain of a FreeSurfer label map as BraTS skull stripping leaves it, bool: parenchyma (labels whose
    structure is not CSF), the CSF within :data:`STRIP_MM` voxels of it, and everything they enclose (ventricles)."""
    classes = class_lookup()[np.minimum(labels, 255)]
    parenchyma = class_tissues()[classes] >= GM
    near = ndimage.binary_dilation(parenchyma, iterations=STRIP_MM)
    return ndimage.binary_fill_holes((labels > 0) & near)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two bool masks."""
    return float(2.0 * np.logical_and(a, b).sum() / max(int(a.sum()) + int(b.sum()), 1))


@dataclass(frozen=True)
class Registration:
    """A label map on the BraTS grid: FreeSurfer labels uint8 (240, 240, 155), RAS+, 0 outside the brain; the
    Dice of its brain mask with the SRI24 mask; seconds the registration took; whether it came from the cache."""

    name: str
    labels: np.ndarray
    dice: float
    seconds: float
    cached: bool


def target_mask(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(bool SRI24 brain mask, RAS+ affine) on the BraTS grid, from ``root`` (shared/data)."""
    path = Path(root) / TARGET
    if not path.is_file():
        raise InputError(f"SRI24 brain mask not found: {path}; pass the shared data folder (or set HTCNNS_SHARED_DATA)")
    image = load_canonical(path)
    return np.asarray(image.dataobj) > 0, image.affine


def register(path: Path, root: Path, threads: int = 1) -> Registration:
    """Register the label map ``path`` to the SRI24 brain of ``root`` (shared/data), without the cache."""
    start = time.perf_counter()
    fixed, fixed_affine = target_mask(root)
    image = load_canonical(path)
    labels = np.rint(np.asarray(image.dataobj)).astype(np.uint16)
    labels[labels >= EXTRA_CEREBRAL] = 0
    if labels.max() > 255:
        raise InputError(f"{path}: brain label {labels.max()} does not fit the uint8 label maps of the cache")
    labels[~stripped_brain(labels)] = 0
    transform = register_mask(labels > 0, image.affine, fixed, fixed_affine, threads)
    reference = _to_sitk(np.zeros(fixed.shape, np.uint8), fixed_affine)
    moved = sitk.Resample(_to_sitk(labels.astype(np.uint8), image.affine), reference, transform,
                          sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    moved = np.ascontiguousarray(sitk.GetArrayFromImage(moved).transpose(2, 1, 0))
    return Registration(Path(path).name.split(".")[0], moved, dice(moved > 0, fixed), time.perf_counter() - start,
                        False)


def registered(path: Path, root: Path, cache: Path | None = None, threads: int = 1) -> Registration:
    """:func:`register`, read from / written to ``cache`` (default :func:`cache_dir`) as ``<sha256>-<settings>.npz``."""
    folder = Path(cache) if cache is not None else cache_dir()
    entry = folder / f"{sha256(path)}-{REGISTRATION}.npz"
    if entry.is_file():
        with np.load(entry) as saved:
            return Registration(str(saved["name"]), saved["labels"], float(saved["dice"]), float(saved["seconds"]),
                                True)
    result = register(path, root, threads)
    folder.mkdir(parents=True, exist_ok=True)
    partial = entry.with_name(f"{entry.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(partial, name=result.name, labels=result.labels, dice=result.dice, seconds=result.seconds)
    os.replace(partial, entry)  # atomic: concurrent runs never read half a file
    return result


@dataclass(frozen=True)
class Anatomy:
    """A registered anatomy cropped to its brain box, ready to be deformed like the SRI24 :class:`Atlas`.

    classes: uint8 (x, y, z) structure classes (:data:`STRUCTURES`); ``summary`` is an :class:`Atlas` of its
    one-hot tissues whose ``probs`` is empty (built per case by :meth:`atlas`, ~50 MB).
    """

    name: str
    classes: np.ndarray
    summary: Atlas

    def tissue_probs(self) -> np.ndarray:
        """float32 (3, x, y, z): one-hot CSF/GM/WM of :attr:`classes`."""
        tissue = class_tissues()[self.classes]
        return np.stack([tissue == k for k in (CSF, GM, WM)]).astype(np.float32)

    def atlas(self) -> Atlas:
        """The :class:`Atlas` of this anatomy: its one-hot tissues as ``probs``."""
        probs = torch.from_numpy(self.tissue_probs()).unsqueeze(0)
        return Atlas(probs, self.summary.lo, self.summary.affine, self.summary.wm_voxels, self.summary.fossa_voxels,
                     self.summary.surface)

    def deform_classes(self, grid: torch.Tensor) -> np.ndarray:
        """Structure classes read through ``grid`` (from ``anatomy.sampling_grid``) by nearest neighbour: uint8 box."""
        classes = torch.from_numpy(self.classes.astype(np.float32))[None, None]
        sampled = F.grid_sample(classes, grid, mode="nearest", padding_mode="zeros", align_corners=True)
        return sampled[0, 0].numpy().astype(np.uint8)


def to_anatomy(registration: Registration, affine: np.ndarray) -> Anatomy:
    """The :class:`Anatomy` of a :class:`Registration` on the grid of ``affine``."""
    classes = class_lookup()[registration.labels]
    tissue = class_tissues()[classes]
    atlas = atlas_from_probs(np.stack([tissue == k for k in (CSF, GM, WM)]).astype(np.float32), affine)
    crop = tuple(slice(int(a), int(a + n)) for a, n in zip(atlas.lo, atlas.probs.shape[2:], strict=True))
    small = [np.ascontiguousarray(v, dtype=np.int16) for v in (atlas.wm_voxels, atlas.fossa_voxels, atlas.surface)]
    summary = Atlas(torch.empty(0), atlas.lo, affine, *small)  # int16 voxels: a quarter of the memory
    return Anatomy(registration.name, np.ascontiguousarray(classes[crop]), summary)


def label_map_paths(root: Path) -> tuple[Path, ...]:
    """The SynthSeg label maps of ``root`` (shared/data), sorted.

    Raises:
        InputError: if there are none.
    """
    paths = tuple(sorted((Path(root) / ANATOMY_DIR).glob("training_seg_*.nii.gz")))
    if not paths:
        raise InputError(f"no SynthSeg label maps under {Path(root) / ANATOMY_DIR} (training_seg_*.nii.gz); pass "
                         "the shared data folder with --atlas (or set HTCNNS_SHARED_DATA)")
    return paths


@functools.lru_cache(maxsize=64)
def load_anatomy(path: Path, root: Path, cache: Path | None = None, threads: int = 1) -> Anatomy:
    """The :class:`Anatomy` of label map ``path``, registered once (cached on disk) and loaded once per process."""
    return to_anatomy(registered(path, root, cache, threads), target_mask(root)[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Register (or read from the cache) every SynthSeg label map; print Dice and time of each."""
    from htcnns.training.synthseg import default_data_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cache", type=Path, default=None, help=f"cache folder (default: {cache_dir()})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="register again, ignoring and not writing the cache")
    args = parser.parse_args(argv)
    root = args.data or default_data_root()
    results = []
    for path in label_map_paths(root):
        result = register(path, root, args.threads) if args.fresh else registered(path, root, args.cache, args.threads)
        results.append(result)
        print(f"{result.name}: Dice {result.dice:.4f}, registration {result.seconds:.1f} s"
              f"{' (cached)' if result.cached else ''}", flush=True)
    scores, seconds = np.array([r.dice for r in results]), np.array([r.seconds for r in results])
    print(f"{len(results)} anatomies: Dice median {np.median(scores):.4f} [{scores.min():.4f}, {scores.max():.4f}]; "
          f"registration median {np.median(seconds):.1f} s [{seconds.min():.1f}, {seconds.max():.1f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
