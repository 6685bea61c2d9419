"""Native hospital scans -> BraTS space, and label maps back to the native T1c grid (SimpleITK).

Per case: every modality co-registered to the T1c (rigid, Mattes mutual information); the T1c registered to the
SRI24 T1 with skull (head tops aligned, rigid, then affine; mutual information, multi-resolution); all four
resampled onto the SRI24 / BraTS grid (240 x 240 x 155, 1 mm; linear); the registration checked
(``htcnns.inference.registration_check``); the skull stripped with the atlas brain mask, refined on the images
(``refine_brain_mask``). The inverse of the T1c -> atlas transform brings a label
map back onto the native T1c grid (nearest neighbour).

Inputs: ``htcnns.inference.native_cases`` (which file or DICOM series of a case folder is which modality).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from htcnns.errors import InputError
from htcnns.inference.native_cases import NativeCase, find_native_cases, read_native
from htcnns.inference.qc import save_qc_picture
from htcnns.inference.registration_check import SEQUENCE_NAMES, RegistrationCheck, check_registration
from htcnns.inference.report import CaseResult, Status
from htcnns.labels import BRATS2021_ET, MODALITIES, Label

REGISTRATION_SEED = 20261202
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BratsSpaceCase:
    """A case brought to BraTS space.

    images: modality -> float32 image on the atlas grid, 0 outside the brain.
    brain: uint8 brain mask on the atlas grid.
    native_t1c: the T1c as read (its grid receives the label map back).
    to_native: maps atlas points to native T1c points (what ``sitk.Resample`` onto the atlas grid needs; its
        inverse brings atlas-grid label maps onto the native grid).
    seconds: per step (read, coregister, register, resample, strip).
    check: the registration's figures (``htcnns.inference.registration_check``); ``check.warnings()`` say what is
        doubtful.
    read_warnings: what was mended while reading the native scans (``native_cases.NativeScan.warnings``).
    native_spacing: modality -> its voxel size (mm) as read.
    """

    case_id: str
    images: Mapping[str, sitk.Image]
    brain: sitk.Image
    native_t1c: sitk.Image
    to_native: sitk.Transform
    seconds: Mapping[str, float]
    check: RegistrationCheck
    read_warnings: tuple[str, ...] = ()
    native_spacing: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """What was mended while reading, then what the registration check doubts."""
        return [*self.read_warnings, *self.check.warnings()]

    def notes(self) -> list[str]:
        """What the user should know about the result that is not a fault: thick slices (``THICK_SLICES_MM``)."""
        thick = {m: max(mm) for m, mm in self.native_spacing.items() if max(mm) > THICK_SLICES_MM}
        if not thick:
            return []
        listed = ", ".join(f"{SEQUENCE_NAMES[m]} {mm:.1f} mm" for m, mm in thick.items())
        return [f"thick slices ({listed}): tumour edges across them are less certain than on scans of "
                f"{THICK_SLICES_MM:.0f} mm or less"]


THICK_SLICES_MM = 3.0
"""A sequence with voxels thicker than this gets a note in the report. On simulated scans, with a perfect preparation,
a 6 mm FLAIR alone lowered the WT Dice against the 1 mm segmentation by 0.03 on average, a 5 mm T2 alone by 0.02
(docs/native-scans.md, 2026-12-07)."""


def atlas_file(name: str) -> Path:
    """A file of the SRI24 atlas shipped with the package (``atlas/``; CC BY-SA 3.0, see its README)."""
    return Path(str(resources.files("htcnns.inference") / "atlas" / name))


@dataclass(frozen=True)
class Atlas:
    """The SRI24 T1 with skull (float32) and its brain mask (uint8), both on the BraTS grid, with what every
    registration to it needs computed once (1-2 s each per case otherwise)."""

    head: sitk.Image
    brain: sitk.Image

    @cached_property
    def top(self) -> np.ndarray:
        """``head_top`` of the atlas head."""
        return head_top(self.head)

    @cached_property
    def brain_centre(self) -> np.ndarray:
        """Physical point: the centre of the atlas brain (where the orientation search turns the head)."""
        inside = np.argwhere(sitk.GetArrayViewFromImage(self.brain) > 0).mean(axis=0)[::-1]
        return np.array(self.brain.TransformContinuousIndexToPhysicalPoint(inside.tolist()))

    @cached_property
    def near_brain(self) -> sitk.Image:
        """The brain mask dilated by ``FOCUS_MM``: where the last affine stage measures."""
        return sitk.BinaryDilate(sitk.Cast(self.brain > 0, sitk.sitkUInt8), [FOCUS_MM] * 3)


def load_atlas() -> Atlas:
    """The SRI24 atlas shipped with the package."""
    return Atlas(sitk.ReadImage(str(atlas_file("sri24_t1_head.nii.gz")), sitk.sitkFloat32),
                 sitk.ReadImage(str(atlas_file("sri24_brain_mask.nii.gz")), sitk.sitkUInt8))


def _mutual_information_method(sampling: float) -> sitk.ImageRegistrationMethod:
    """A registration method measuring Mattes mutual information (32 bins) on a regular, seeded sample of
    ``sampling`` of the fixed image's voxels, linear interpolation."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(sampling, REGISTRATION_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _registration(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, shrink: tuple[int, ...],
                  smooth_mm: tuple[float, ...], iterations: int, sampling: float,
                  fixed_mask: sitk.Image | None = None) -> sitk.Transform:
    """Mattes mutual information on a regular sample of ``sampling`` of the voxels (within ``fixed_mask`` when
    given), regular-step gradient descent (the step halves when the direction turns; measured on simulated scans it
    converges to 0.1 mm where plain gradient descent stopped at 3 mm) with physical-shift scales, one level per
    ``shrink``."""
    method = _mutual_information_method(sampling)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smooth_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def grid_centre(image: sitk.Image) -> np.ndarray:
    """Physical point: the centre of ``image``'s grid."""
    return np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))


def coregister(t1c: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """Rigid transform taking T1c points to ``moving`` points (same head, another sequence). It starts from the
    scanner's coordinates (identity), which series of one session share whatever their field of view."""
    start = sitk.Euler3DTransform()
    start.SetCenter(grid_centre(t1c).tolist())
    return _registration(t1c, moving, start, (4, 2), (2.0, 1.0), 100, 0.05)


HEAD_TOP_MM = 100
"""The head's top ``HEAD_TOP_MM`` (vertex downwards) places it: a scan may or may not reach into the neck, which
moves the centre of mass by centimetres (on real-head simulations it made the affine squash the atlas 30 %)."""
FOCUS_MM = 20
"""The last affine stage measures mutual information only within this distance of the atlas brain: the brain and
its skull, not the face, scalp or neck, whose shapes differ most between heads."""


def head_top(image: sitk.Image) -> np.ndarray:
    """Physical point: the centre (x, y) of the head's top ``HEAD_TOP_MM`` and its highest point (z)."""
    array = sitk.GetArrayViewFromImage(image)
    head = sitk.GetImageFromArray((array > 0.15 * np.percentile(array, 99)).astype(np.uint8))
    head.CopyInformation(image)
    head = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(head)) == 1)
    points = voxels_to_world(image, np.argwhere(head)[:, ::-1])
    top = points[:, 2].max()
    upper = points[points[:, 2] > top - HEAD_TOP_MM]
    return np.array([upper[:, 0].mean(), upper[:, 1].mean(), top])


def _unwrapped(transform: sitk.Transform) -> sitk.Transform:
    """The transform a registration returned (it may come wrapped in a composite)."""
    transform = transform.Downcast()
    while isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetNthTransform(0).Downcast()
    return transform


def _affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """The matrix, centre and translation of a registration's result as one AffineTransform."""
    transform = _unwrapped(transform)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    return affine


ORIENTATION_STEPS_DEG = 15
ORIENTATION_STEPS = 2
"""The orientation search tries rotations about the brain's centre of up to ``ORIENTATION_STEPS`` steps of
``ORIENTATION_STEPS_DEG`` per axis (125 at +-30 deg). Without it a real head shape turned 20-40 deg beyond its
simulated pose converged 9-40 mm off on 8 turns of 10; with it on 1 (chin up 40 deg; docs/native-scans.md)."""


def _orientation_search(atlas: Atlas, t1c: sitk.Image, start: sitk.Euler3DTransform) -> sitk.Euler3DTransform:
    """``start`` turned about the atlas brain's centre by the grid rotation whose mutual information is best at the
    8 mm level (exhaustive search, translation kept)."""
    turned = sitk.Euler3DTransform()
    turned.SetCenter(atlas.brain_centre.tolist())
    turned.SetTranslation(start.GetTranslation())
    method = _mutual_information_method(0.2)
    method.SetOptimizerAsExhaustive([ORIENTATION_STEPS] * 3 + [0, 0, 0], stepLength=np.radians(ORIENTATION_STEPS_DEG))
    method.SetOptimizerScales([1.0] * 6)
    method.SetShrinkFactorsPerLevel([8])
    method.SetSmoothingSigmasPerLevel([4.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(turned, inPlace=True)
    method.Execute(atlas.head, t1c)
    return turned


def _mutual_information(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """Mattes mutual information (lower is better) of ``moving`` through ``transform`` on 5 % of ``fixed``."""
    method = _mutual_information_method(0.05)
    method.SetInitialTransform(transform)
    return method.MetricEvaluate(fixed, moving)


def _rigid_to_atlas(atlas: Atlas, t1c: sitk.Image) -> sitk.Transform:
    """Rigid atlas -> T1c transform from the head tops aligned (``head_top``) and, where the orientation search
    finds the head turned, also from that turn: the start whose result matches better."""
    start = sitk.Euler3DTransform()
    start.SetCenter(atlas.top.tolist())
    start.SetTranslation((head_top(t1c) - atlas.top).tolist())
    rigid = _registration(atlas.head, t1c, start, (8, 4), (4.0, 2.0), 150, 0.05)
    turned = _orientation_search(atlas, t1c, start)
    if not any(turned.GetParameters()[:3]):  # the unturned start is the best: nothing to compare
        return rigid
    from_turned = _registration(atlas.head, t1c, turned, (8, 4), (4.0, 2.0), 150, 0.05)
    return min(rigid, from_turned, key=lambda found: _mutual_information(atlas.head, t1c, found))


def register_to_atlas(atlas: Atlas, t1c: sitk.Image) -> sitk.Transform:
    """Affine transform taking atlas points to T1c points: rigid (``_rigid_to_atlas``), affine on the whole head,
    then affine within ``FOCUS_MM`` of the atlas brain."""
    rigid = _rigid_to_atlas(atlas, t1c)
    affine = _registration(atlas.head, t1c, _affine(rigid), (4, 2), (2.0, 1.0), 100, 0.05)
    return _registration(atlas.head, t1c, _affine(affine), (4, 2), (2.0, 1.0), 100, 0.2, atlas.near_brain)


SURE_BRAIN_MM = 3
SEARCH_MM = 3
T1_TISSUE = 0.5
T1C_TISSUE = 0.5
T2_TISSUE = (0.4, 2.0)
"""Near the atlas brain's edge a voxel is brain tissue when its T1 and its T1c are above ``T1_TISSUE`` and
``T1C_TISSUE`` and its T2 within ``T2_TISSUE`` of the brain core's medians: CSF is dark on T1 and bright on T2, skull
dark on all three, marrow and scalp fat bright on T1 but separated from the brain by the skull (cut by an
opening)."""
CSF_BELOW = 0.55
"""Inside the mask a voxel is CSF when its T1 and its FLAIR are below ``CSF_BELOW`` times the core's medians
(fluid is suppressed on FLAIR; oedema and tumour are not)."""
CSF_KEPT_MM = 1
OUTER_MM = 8
"""BraTS masks keep the CSF within about ``CSF_KEPT_MM`` of the brain tissue (sulci, the cisterns' edge); CSF
farther from it within the mask's outer ``OUTER_MM`` is the subarachnoid space of an atlas brain larger than the
patient's and is removed. Deeper CSF (ventricles) always stays."""
GROW_MM = 1
"""The refined mask grows by this much within the atlas brain at the end: the rules above leave it about 1 mm
tighter than BraTS masks (the surface CSF; docs/native-scans.md, 2026-12-07)."""


def refine_brain_mask(atlas_brain: np.ndarray, t1n: np.ndarray, t1c: np.ndarray, t2w: np.ndarray,
                      t2f: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The brain mask on the atlas grid: the atlas brain eroded by ``SURE_BRAIN_MM`` (sure brain) plus the brain
    tissue within ``SEARCH_MM`` of the atlas brain connected to it, less the CSF of its outer ``OUTER_MM`` farther
    than ``CSF_KEPT_MM`` from tissue (where the patient's brain is smaller than the atlas's), grown by ``GROW_MM``
    within the atlas brain, its largest connected piece, holes filled, where the scan has signal."""
    core = ndimage.binary_erosion(atlas_brain, iterations=SURE_BRAIN_MM) & inside
    if not core.any():
        return atlas_brain & inside
    search = ndimage.binary_dilation(atlas_brain, iterations=SEARCH_MM) & inside
    t1, contrast, t2, flair = (float(np.median(image[core])) for image in (t1n, t1c, t2w, t2f))
    tissue = search & (t1n > T1_TISSUE * t1) & (t1c > T1C_TISSUE * contrast)
    tissue &= (t2w > T2_TISSUE[0] * t2) & (t2w < T2_TISSUE[1] * t2)
    tissue = ndimage.binary_opening(tissue, iterations=2) | core
    labels, _ = ndimage.label(tissue)
    mask = ndimage.binary_fill_holes(np.isin(labels, np.unique(labels[core])))
    csf = ndimage.binary_opening(mask & (t1n < CSF_BELOW * t1) & (t2f < CSF_BELOW * flair))
    near_tissue = ndimage.binary_dilation(mask & ~csf, iterations=CSF_KEPT_MM)
    outer = mask & ~ndimage.binary_erosion(mask, iterations=OUTER_MM)
    kept = mask & ~(csf & outer & ~near_tissue)
    labels, _ = ndimage.label(kept)
    refined = np.isin(labels, np.unique(labels[core & kept]))
    grown = ndimage.binary_dilation(refined, iterations=GROW_MM) & atlas_brain & inside
    pieces, count = ndimage.label(refined | grown)  # the brain is one piece: islands at the atlas's edge go
    brain = pieces == np.bincount(pieces.ravel())[1:].argmax() + 1 if count > 1 else pieces > 0
    return ndimage.binary_fill_holes(brain)


def to_brats_space(case: NativeCase, atlas: Atlas | None = None) -> BratsSpaceCase:
    """Read, co-register, register to the atlas, resample and skull-strip one native case.

    Raises:
        InputError: a modality cannot be read, or a registration fails or is not believable (``check.failures``).
    """
    atlas = atlas or load_atlas()
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    scans = {m: read_native(case.sources[m], case.case_id, case.series.get(m, "")) for m in MODALITIES}
    native = {m: scan.image for m, scan in scans.items()}
    seconds["read"], tick = time.perf_counter() - tick, time.perf_counter()
    try:
        to_modality = {m: coregister(native["t1c"], native[m]) for m in MODALITIES if m != "t1c"}
        seconds["coregister"], tick = time.perf_counter() - tick, time.perf_counter()
        to_native = register_to_atlas(atlas, native["t1c"])
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1][:200]
        raise InputError(f"{case.case_id}: registration failed ({reason}); check that the four files are brain "
                         "scans of one head") from None
    seconds["register"], tick = time.perf_counter() - tick, time.perf_counter()
    chains = {m: to_native if m == "t1c" else sitk.CompositeTransform([to_modality[m], to_native])
              for m in MODALITIES}
    images = {m: sitk.Resample(native[m], atlas.head, chains[m], sitk.sitkLinear, 0.0, sitk.sitkFloat32)
              for m in MODALITIES}
    inside = {m: field_of_view(native[m], atlas.head, chains[m]) for m in MODALITIES}
    seconds["resample"], tick = time.perf_counter() - tick, time.perf_counter()
    atlas_brain = sitk.GetArrayViewFromImage(atlas.brain) > 0
    check = check_registration(atlas.head, sitk.GetArrayViewFromImage(atlas.near_brain) > 0, atlas_brain,
                               images, inside, _affine(to_native).GetMatrix())
    failures = check.failures()
    if failures:
        raise InputError(f"{case.case_id}: cannot be prepared: {'; '.join(failures)}")
    mask = refine_brain_mask(atlas_brain, *(sitk.GetArrayViewFromImage(images[m]) for m in MODALITIES),
                             inside["t1c"])
    brain = sitk.GetImageFromArray(mask.astype(np.uint8))
    brain.CopyInformation(atlas.head)
    stripped = {m: sitk.Mask(image, brain) for m, image in images.items()}
    seconds["strip"] = time.perf_counter() - tick
    read_warnings = tuple(w for scan in scans.values() for w in scan.warnings)
    return BratsSpaceCase(case.case_id, stripped, brain, native["t1c"], to_native, seconds, check, read_warnings,
                          {m: image.GetSpacing() for m, image in native.items()})


def field_of_view(native: sitk.Image, grid: sitk.Image, to_native: sitk.Transform) -> np.ndarray:
    """Where on ``grid`` the scan ``native`` has voxels (bool array)."""
    ones = sitk.Image(native.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(native)
    return sitk.GetArrayFromImage(sitk.Resample(ones, grid, to_native, sitk.sitkNearestNeighbor, 0)) > 0


def labels_to_native(labels: sitk.Image, case: BratsSpaceCase) -> sitk.Image:
    """A label map on the atlas grid resampled (nearest neighbour) onto the native T1c grid, uint8."""
    return _onto_native_grid(labels, case.native_t1c, case.to_native)


def _onto_native_grid(labels: sitk.Image, native_grid: sitk.Image, to_native: sitk.Transform) -> sitk.Image:
    return sitk.Resample(labels, native_grid, to_native.GetInverse(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


TRANSFORM_NAME = "to-native.tfm"
NATIVE_T1C_NAME = "native-t1c-scan.nii.gz"  # not "<id>-t1c.nii.gz": find_cases would read a case
PREPARATION_NAME = "preparation.json"


def write_brats_space(case: BratsSpaceCase, folder: Path) -> Path:
    """Write a prepared case as a BraTS case folder ``folder/<case-id>/`` (the four ``<case-id>-<modality>.nii.gz``,
    ``<case-id>-brain.nii.gz``, the transform, the native T1c as read and ``preparation.json``: the registration's
    figures, warnings and seconds), complete or not at all."""
    target = folder / case.case_id
    partial = folder / f".{case.case_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for modality, image in case.images.items():
        sitk.WriteImage(image, str(partial / f"{case.case_id}-{modality}.nii.gz"))
    sitk.WriteImage(case.brain, str(partial / f"{case.case_id}-brain.nii.gz"))
    sitk.WriteTransform(case.to_native, str(partial / TRANSFORM_NAME))
    sitk.WriteImage(case.native_t1c, str(partial / NATIVE_T1C_NAME))
    record = {"registration": case.check.to_json(), "warnings": case.warnings(), "notes": case.notes(),
              "native_spacing_mm": {m: list(mm) for m, mm in case.native_spacing.items()},
              "seconds": dict(case.seconds)}
    (partial / PREPARATION_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def native_labels(labels_path: Path, prepared_case: Path) -> sitk.Image:
    """The BraTS-space label map ``labels_path`` on the native T1c grid of a case folder ``write_brats_space``
    wrote (nearest neighbour through the inverse of the T1c -> atlas transform)."""
    return _onto_native_grid(sitk.ReadImage(str(labels_path)), _native_grid(prepared_case),
                             sitk.ReadTransform(str(prepared_case / TRANSFORM_NAME)))


def _native_grid(prepared_case: Path) -> sitk.Image:
    """An empty uint8 image on the grid of the case's native T1c, from its header alone."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(prepared_case / NATIVE_T1C_NAME))
    reader.ReadImageInformation()
    grid = sitk.Image(reader.GetSize(), sitk.sitkUInt8)
    grid.SetOrigin(reader.GetOrigin())
    grid.SetSpacing(reader.GetSpacing())
    grid.SetDirection(reader.GetDirection())
    return grid


def save_native_qc_picture(case_id: str, prepared_case: Path, labels: sitk.Image, path: Path) -> None:
    """The QC picture (``qc.save_qc_picture``) on the native T1c grid: the T1c as read, the FLAIR as prepared
    (skull-stripped, so the brain mask shows) carried back, and ``labels`` (on that grid; ET 3 or 4)."""
    t1c = sitk.ReadImage(str(prepared_case / NATIVE_T1C_NAME), sitk.sitkFloat32)
    to_native = sitk.ReadTransform(str(prepared_case / TRANSFORM_NAME))
    flair = sitk.Resample(sitk.ReadImage(str(prepared_case / f"{case_id}-t2f.nii.gz"), sitk.sitkFloat32), t1c,
                          to_native.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(labels).T
    values = np.where(values == BRATS2021_ET, np.uint8(Label.ET), values)
    save_qc_picture(sitk.GetArrayFromImage(t1c).T, sitk.GetArrayFromImage(flair).T, values, ras_affine(t1c), path,
                    f"{case_id} on its native T1c grid (FLAIR: as prepared, brain only)")


def lps_affine(image: sitk.Image) -> np.ndarray:
    """The 4 x 4 voxel (x, y, z) -> world matrix (mm) of a SimpleITK image, in its own LPS world."""
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


def ras_affine(image: sitk.Image) -> np.ndarray:
    """The 4 x 4 voxel (x, y, z) -> RAS world matrix (mm) of a SimpleITK image (whose world is LPS)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine(image)


def voxels_to_world(image: sitk.Image, indices: np.ndarray) -> np.ndarray:
    """Physical (LPS) points (n x 3) of voxel ``indices`` (n x 3, x y z) of ``image``."""
    affine = lps_affine(image)
    return indices @ affine[:3, :3].T + affine[:3, 3]


@dataclass(frozen=True)
class Preparation:
    """What ``prepare_native_cases`` did besides the prepared case folders: the cases left out because their label
    map is already in the output (``kept``), one line per case that could not be prepared (``problems``), and the
    warnings of the prepared ones (``warnings``, also logged) and their notes (``notes``, report only)."""

    kept: list[str]
    problems: dict[str, str]
    warnings: dict[str, list[str]]
    notes: dict[str, list[str]] = field(default_factory=dict)

    def noted(self, result: CaseResult) -> CaseResult:
        """``result`` with its case's preparation warnings and notes added to its note; ``result`` itself when
        none."""
        added = [*self.warnings.get(result.case_id, []), *self.notes.get(result.case_id, [])]
        return replace(result, note="; ".join(filter(None, [result.note, *added]))) if added else result

    def results(self, output: Path) -> list[CaseResult]:
        """The kept and the failed cases as report entries."""
        return ([CaseResult(case_id, Status.SKIPPED, output=output / f"{case_id}.nii.gz") for case_id in self.kept]
                + [CaseResult(case_id, Status.FAILED, line) for case_id, line in self.problems.items()])


def prepare_native_cases(root: Path, prepared: Path, output: Path, overwrite: bool) -> Preparation:
    """Bring every native case under ``root`` to BraTS space as case folders under ``prepared`` (a progress bar);
    cases whose label map is already in ``output`` are kept unless ``overwrite``. A case that cannot be prepared
    gets one line (logged) and the others go on."""
    preparation = Preparation([], {}, {})
    atlas = load_atlas()
    cases = find_native_cases(root)
    bar_off = True if os.environ.get("TQDM_DISABLE") else None  # --quiet; None: a bar on a terminal only
    for case in tqdm(cases, desc="preparing", unit="case", disable=bar_off):
        if not overwrite and (output / f"{case.case_id}.nii.gz").is_file():
            preparation.kept.append(case.case_id)
            continue
        try:
            if case.problem:
                raise InputError(f"{case.case_id}: {case.problem}")
            brats_space = to_brats_space(case, atlas)
            preparation.warnings[case.case_id] = brats_space.warnings()
            preparation.notes[case.case_id] = brats_space.notes()
            for warning in preparation.warnings[case.case_id]:
                log.warning("%s: %s", case.case_id, warning)
            write_brats_space(brats_space, prepared)
        except InputError as error:
            log.error("%s", error)
            preparation.problems[case.case_id] = str(error)
    return preparation
