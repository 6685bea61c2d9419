"""Fast, seeded synthetic BraTS-like multi-modal MRI phantoms with tumour sub-region labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from htcnns.labels import MODALITIES

BRATS_SHAPE = (240, 240, 155)

#: Internal tissue codes of the map returned by :func:`make_phantom_with_tissues`.
TISSUES = ("background", "csf", "gm", "wm", "ed", "ncr", "et")
_CSF, _GM, _WM, _ED, _NCR, _ET = 1, 2, 3, 4, 5, 6
#: Tissue code -> BraTS label (0 background, 1 NCR, 2 ED, 3 ET).
_TISSUE_TO_LABEL = np.array([0, 0, 0, 0, 2, 1, 3], dtype=np.uint8)

#: Nominal mean intensities, relative units, rows in MODALITIES order, columns in TISSUES order.
_MEANS = np.array(
    [
        [0.0, 0.30, 0.70, 1.00, 0.85, 0.45, 0.72],  # t1n: WM > GM > CSF; tumour hypointense
        [0.0, 0.30, 0.72, 1.00, 0.85, 0.40, 1.80],  # t1c: ET brightest, NCR dark
        [0.0, 1.60, 0.90, 0.65, 1.25, 1.35, 1.00],  # t2w: CSF brightest, WM < GM
        [0.0, 0.25, 0.90, 0.70, 1.50, 0.95, 1.15],  # t2f: CSF suppressed, ED brightest, GM > WM
    ],
    dtype=np.float32,
)
#: Non-enhancing solid core, blended into NCR for the "non_enhancing" variant (t1n, t1c, t2w, t2f).
_NON_ENHANCING = np.array([0.62, 0.66, 1.15, 1.25], dtype=np.float32)
#: Relative units -> stored int16 values; the brightest nominal tissue of each modality maps to 2500.
_INT_SCALE = 2500.0 / _MEANS.max(axis=1)
_FLOOR = 0.01  # relative units; keeps every brain voxel strictly positive

VARIANTS = ("classic", "solid", "non_enhancing")


@dataclass(frozen=True)
class Phantom:
    """A synthetic case.

    Attributes:
        image: float32 (4, X, Y, Z), channels in MODALITIES order, relative units, 0 outside the brain and
            positive inside.
        label: uint8 (X, Y, Z): 0 background, 1 NCR (necrotic core), 2 ED (oedema), 3 ET (enhancing tumour).
        affine: float64 (4, 4) voxel-to-world in mm, BraTS LPS convention diag(-1, -1, 1), origin (0, Y-1, 0).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class _Box:
    """Axis-aligned voxel box [lo, hi) and the brain ellipsoid it frames (centre, radii in voxels)."""

    lo: np.ndarray
    hi: np.ndarray
    centre: np.ndarray
    radii: np.ndarray

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lo, self.hi, strict=True))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(b - a) for a, b in zip(self.lo, self.hi, strict=True))


def brats_affine(shape: tuple[int, int, int] = BRATS_SHAPE) -> np.ndarray:
    """Return the BraTS voxel-to-world affine, float64 (4, 4): diag(-1, -1, 1, 1), origin (0, Y-1, 0)."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


def tumour_variant(seed: int) -> str:
    """Return the tumour variant that `make_phantom(seed)` draws: one of VARIANTS.

    "solid" (15 %): enhancing core without necrosis; "non_enhancing" (10 %): core mostly NCR with little or
    no ET; "classic" (75 %): enhancing rim around a necrotic centre.
    """
    return _variant(np.random.default_rng(seed))


def _variant(rng: np.random.Generator) -> str:
    u = rng.random()
    return "solid" if u < 0.15 else "non_enhancing" if u < 0.25 else "classic"


def _bspline_matrix(n: int, cell: float) -> np.ndarray:
    """Cubic B-spline weights, float32 (n, knots), rows scaled so unit-variance knots give unit variance."""
    n_knots = int(np.ceil((n - 1) / cell)) + 3
    t = np.abs(np.arange(n)[:, None] - (np.arange(n_knots)[None, :] - 1) * cell) / cell
    w = np.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
    return (w / np.sqrt((w**2).sum(axis=1, keepdims=True))).astype(np.float32)


def _upsample_first_axis(coarse: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Contract axis 0 of `coarse` (k, ...) with `weights` (n, k) into float32 (n, ...).

    Knot by knot over its (compact) support with plain elementwise ops, so the result does not depend on
    BLAS kernels or thread counts (a GEMM here is faster but not bit-reproducible across thread settings).
    """
    out = np.zeros((weights.shape[0], *coarse.shape[1:]), dtype=np.float32)
    tmp = np.empty_like(out)
    for k in range(weights.shape[1]):
        rows = np.flatnonzero(weights[:, k])
        if rows.size == 0:
            continue
        lo, hi = rows[0], rows[-1] + 1
        np.multiply(weights[lo:hi, k].reshape(-1, *([1] * (coarse.ndim - 1))), coarse[k], out=tmp[lo:hi])
        out[lo:hi] += tmp[lo:hi]
    return out


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cell: float) -> np.ndarray:
    """Smooth Gaussian random field, float32 `shape`, zero mean, ~unit variance, correlation length ~`cell`.

    Coarse white noise on a knot grid (spacing `cell` voxels) is upsampled with separable cubic B-splines,
    several times faster than ``scipy.ndimage.zoom`` on a full volume.
    """
    mx, my, mz = (_bspline_matrix(n, max(cell, 1.0)) for n in shape)
    field = rng.standard_normal((mx.shape[1], my.shape[1], mz.shape[1]), dtype=np.float32)
    for weights in (mz, my, mx):  # each pass upsamples the last axis and moves it to the front
        field = _upsample_first_axis(np.ascontiguousarray(field.transpose(2, 0, 1)), weights)
    return field


def _axes(lo: np.ndarray, hi: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> list[np.ndarray]:
    """Broadcastable float32 normalised coordinates (i - centre) / radius for the voxel box [lo, hi)."""
    out = []
    for axis in range(3):
        u = np.arange(lo[axis], hi[axis], dtype=np.float32) - np.float32(centre[axis])
        u /= np.float32(radii[axis])
        out.append(u.reshape([-1 if a == axis else 1 for a in range(3)]))
    return out


def _ellipsoid(
    centre: np.ndarray, radii: np.ndarray, shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Boolean mask of an ellipsoid within its own bounding box; returns (slices into `shape`, mask)."""
    lo = np.clip(np.floor(centre - radii).astype(int), 0, shape)
    hi = np.clip(np.ceil(centre + radii).astype(int) + 1, 0, shape)
    ux, uy, uz = _axes(lo, hi, centre, radii)
    slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return slices, ux**2 + uy**2 + uz**2 <= 1.0


def _draw_brain_box(rng: np.random.Generator, shape: tuple[int, int, int]) -> _Box:
    """Draw brain centre and radii (voxels) and the voxel box that contains the irregular brain."""
    dims = np.asarray(shape, dtype=float)
    radii = rng.uniform([0.29, 0.35, 0.37], [0.33, 0.39, 0.42]) * dims
    centre = (0.5 + rng.uniform(-0.02, 0.02, 3)) * (dims - 1)
    reach = radii * 1.15 + 1  # surface perturbation is |0.03 * N(0, 1)| << 0.15
    lo = np.clip(np.floor(centre - reach).astype(int), 0, shape)
    hi = np.clip(np.ceil(centre + reach).astype(int) + 1, 0, shape)
    return _Box(lo, hi, centre, radii)


def _brain_tissues(rng: np.random.Generator, box: _Box, scale: float) -> np.ndarray:
    """Tissue map of the brain box, uint8 box.shape: 0 outside, CSF rim, cortical GM shell, WM inside."""
    ux, uy, uz = _axes(box.lo, box.hi, box.centre, box.radii)
    r_eff = np.sqrt(ux**2 + uy**2 + uz**2)
    r_eff -= 0.03 * _smooth_field(rng, box.shape, 14 * scale)
    mean_radius = float(box.radii.mean())
    csf = 1.5 * scale / mean_radius
    gm = rng.uniform(3.0, 4.5) * scale / mean_radius
    folds = _smooth_field(rng, box.shape, 6 * scale)
    tissue = (r_eff < 1.0).view(np.uint8) + (r_eff < 1.0 - csf).view(np.uint8)
    r_eff += np.float32(0.45 * gm) * folds
    tissue += (r_eff < 1.0 - csf - gm).view(np.uint8)  # 0 bg, 1 CSF, 2 GM, 3 WM
    _add_deep_structures(rng, tissue, box, scale, uz)
    return tissue


def _add_deep_structures(
    rng: np.random.Generator, tissue: np.ndarray, box: _Box, scale: float, uz: np.ndarray
) -> None:
    """Paint deep GM nuclei, two lateral ventricles and the interhemispheric fissure (CSF) in place."""
    local_centre = box.centre - box.lo
    for side in (-1.0, 1.0):
        offset = np.array([side * 0.21, rng.uniform(-0.03, 0.03), -0.05]) * box.radii
        radii = rng.uniform([0.08, 0.12, 0.10], [0.11, 0.16, 0.13]) * box.radii
        sl, mask = _ellipsoid(local_centre + offset, radii, tissue.shape)
        tissue[sl][mask & (tissue[sl] == _WM)] = _GM
    for side in (-1.0, 1.0):
        offset = np.array([side * rng.uniform(0.07, 0.10), rng.uniform(-0.06, 0.02), 0.08]) * box.radii
        radii = rng.uniform([0.05, 0.28, 0.11], [0.08, 0.36, 0.16]) * box.radii
        sl, mask = _ellipsoid(local_centre + offset, radii, tissue.shape)
        tissue[sl][mask & (tissue[sl] > 0)] = _CSF
    width = max(1, round(2 * scale))
    x0 = int(round(local_centre[0])) - width // 2
    slab = tissue[x0 : x0 + width]
    slab[(slab > 0) & (uz.reshape(1, 1, -1) > 0.3)] = _CSF


def _draw_tumour_geometry(
    rng: np.random.Generator, box: _Box, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Draw tumour centre (global voxels), oedema radii (voxels per axis) and hemisphere side (-1 or +1).

    The nominal oedema ellipsoid stays within 0.92 of the brain radius and 2 voxels off the midline
    (radii shrink if it cannot), so the core is well inside the brain.
    """
    side = float(rng.choice([-1.0, 1.0]))
    radii = rng.uniform(15.0, 30.0) * rng.uniform(0.85, 1.15, 3) * scale
    rel = radii / box.radii
    margin = 2.0 * scale[0] / box.radii[0]
    shrink = min(1.0, (0.92 - margin) / (rel[0] + rel.max()))
    rel, radii = rel * shrink, radii * shrink
    rho_max = 0.92 - rel.max()
    ux = rng.uniform(rel[0] + margin, max(rho_max, rel[0] + margin))
    rest = np.sqrt(max(rho_max**2 - ux**2, 0.0)) * np.sqrt(rng.uniform(0.0, 0.8))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    u = np.array([side * ux, rest * np.cos(angle), rest * np.sin(angle)])
    return box.centre + u * box.radii, radii, side


def _tumour_box(
    centre: np.ndarray, radii: np.ndarray, side: float, box: _Box
) -> tuple[np.ndarray, np.ndarray]:
    """Global voxel box [lo, hi) around the tumour, clipped to the brain box and to its hemisphere."""
    lo = np.maximum(np.floor(centre - 1.4 * radii).astype(int), box.lo)
    hi = np.minimum(np.ceil(centre + 1.4 * radii).astype(int) + 1, box.hi)
    midline = int(round(box.centre[0]))
    if side > 0:
        lo[0] = max(lo[0], midline + 1)
    else:
        hi[0] = min(hi[0], midline)
    return lo, hi


def _core_masks(
    rng: np.random.Generator, axes: list[np.ndarray], variant: str, rim: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Tumour-core (TC) and necrosis (NCR) masks, bool; `axes` are coordinates in oedema radii, `rim` too."""
    shape = tuple(len(a.ravel()) for a in axes)
    rho = rng.uniform(0.4, 0.7)
    offset = rng.uniform(-0.15, 0.15, 3)
    d = np.sqrt(sum((a - np.float32(o)) ** 2 for a, o in zip(axes, offset, strict=True))) / np.float32(rho)
    d -= 0.12 * _smooth_field(rng, shape, max(2.0, 6.0 * scale))
    core = d < 1.0
    rim_noise = _smooth_field(rng, shape, max(2.0, 4.0 * scale))
    rim = min(rim / rho, 0.4)  # enhancing rim thickness in core radii: at most 40 % of the core
    inner = d < 1.0 - rim * (1.0 + 0.4 * np.clip(rim_noise, -1.5, 1.5))
    if variant == "solid":
        return core, np.zeros_like(core)
    if variant == "non_enhancing":
        return core, core & (inner | (rim_noise < 1.3))
    return core, inner & core


def _add_tumour(
    rng: np.random.Generator, tissue: np.ndarray, box: _Box, variant: str, scale: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Paint ED, NCR and ET into the brain-box tissue map in place; return (tumour slices, texture field)."""
    centre, radii, side = _draw_tumour_geometry(rng, box, scale)
    lo, hi = _tumour_box(centre, radii, side, box)
    axes = _axes(lo, hi, centre, radii)  # in units of the oedema radii
    shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
    d_ed = np.sqrt(axes[0] ** 2 + axes[1] ** 2 + axes[2] ** 2)
    d_ed -= 0.15 * _smooth_field(rng, shape, max(2.0, 8.0 * float(scale.mean())))
    rim = max(rng.uniform(2.5, 5.0) * float(scale.mean()), 1.0) / float(radii.mean())  # >= 1 voxel
    core, necrosis = _core_masks(rng, axes, variant, rim, float(scale.mean()))
    sl = tuple(slice(int(a - b), int(c - b)) for a, c, b in zip(lo, hi, box.lo, strict=True))
    sub = tissue[sl]
    core &= sub > 0
    sub[(d_ed < 1.0) & ((sub == _GM) | (sub == _WM))] = _ED
    sub[core] = _ET
    sub[core & necrosis] = _NCR
    texture = 1.0 + 0.06 * _smooth_field(rng, shape, max(2.0, 3.0 * float(scale.mean())))
    texture[sub < _ED] = 1.0  # heterogeneity inside the tumour only
    return sl, texture


def _channel_means(rng: np.random.Generator, variant: str) -> np.ndarray:
    """Per-phantom jittered mean intensities, float32 (4, 7): global gain ±15 % times per-tissue ±8 %."""
    means = _MEANS * rng.uniform(0.85, 1.15, (4, 1)) * rng.uniform(0.92, 1.08, _MEANS.shape)
    if variant == "non_enhancing":
        means[:, _NCR] = 0.5 * means[:, _NCR] + 0.5 * _NON_ENHANCING * means[:, _WM] / _MEANS[:, _WM]
    return means.astype(np.float32)


def _render_channel(
    rng: np.random.Generator,
    tissue: np.ndarray,
    means: np.ndarray,
    tumour: tuple[tuple[slice, ...], np.ndarray],
    scale: float,
    outside: np.ndarray,
) -> np.ndarray:
    """One modality of the brain box, float32 tissue.shape: partial-volume blur, bias field, noise, clip.

    `means` is float32 (7,) per tissue code; `outside` is the bool background mask of the box.
    """
    lut = means.copy()
    lut[0] = means[_CSF]  # background blurs like CSF, so the brain edge is not darkened
    img = lut[tissue]
    sl, texture = tumour
    img[sl] *= texture
    sigma = rng.uniform(0.5, 0.9) * max(scale, 0.5)
    img = ndimage.gaussian_filter(img, sigma, truncate=2.5)
    bias = _smooth_field(rng, tissue.shape, 60 * scale)  # ~unit variance: +-2 sd is +-10-20 %
    bias *= np.float32(rng.uniform(0.1, 0.2) * 0.5)
    bias += np.float32(1.0)
    img *= bias
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(0.03, 0.06) * means[_WM])
    img += noise
    np.maximum(img, np.float32(_FLOOR), out=img)
    np.copyto(img, np.float32(0.0), where=outside)
    return img


def make_phantom_with_tissues(
    seed: int, *, shape: tuple[int, int, int] = BRATS_SHAPE
) -> tuple[Phantom, np.ndarray]:
    """Like :func:`make_phantom`, also returning the tissue map, uint8 `shape`, codes indexing TISSUES."""
    rng = np.random.default_rng(seed)
    variant = _variant(rng)
    scales = np.asarray(shape, dtype=float) / np.asarray(BRATS_SHAPE, dtype=float)
    scale = float(scales.mean())
    box = _draw_brain_box(rng, shape)
    tissue_box = _brain_tissues(rng, box, scale)
    tumour = _add_tumour(rng, tissue_box, box, variant, scales)
    means = _channel_means(rng, variant)
    outside = tissue_box == 0
    image = np.zeros((len(MODALITIES), *shape), dtype=np.float32)
    for c in range(len(MODALITIES)):
        image[(c, *box.slices)] = _render_channel(rng, tissue_box, means[c], tumour, scale, outside)
    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[box.slices] = tissue_box
    label = np.zeros(shape, dtype=np.uint8)
    label[box.slices] = _TISSUE_TO_LABEL[tissue_box]
    return Phantom(image, label, brats_affine(shape)), tissue


def make_phantom(seed: int, *, shape: tuple[int, int, int] = BRATS_SHAPE) -> Phantom:
    """Generate a deterministic BraTS-like phantom (brain, CSF/GM/WM, one glioma with NCR/ED/ET).

    Args:
        seed: Random seed; the same seed gives byte-identical arrays on the same machine.
        shape: Volume shape (X, Y, Z) in voxels; all geometry scales with `shape` / BRATS_SHAPE.

    Returns:
        Phantom with image float32 (4, X, Y, Z), label uint8 (X, Y, Z) and affine float64 (4, 4).
    """
    return make_phantom_with_tissues(seed, shape=shape)[0]


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def write_phantom_case(
    phantom: Phantom, case_dir: Path, case_id: str, *, truth_path: Path | None = None
) -> None:
    """Write a phantom as a BraTS-2023-named case.

    Writes ``case_dir/<case_id>-{t1n,t1c,t2w,t2f}.nii.gz`` as int16 (relative units scaled so the brightest
    nominal tissue is ~2500) with the phantom affine as qform and sform (code 1), and, if `truth_path` is
    given, the uint8 label map there. Creates `case_dir` (and the parent of `truth_path`).
    """
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    for c, modality in enumerate(MODALITIES):
        scaled = np.rint(phantom.image[c] * np.float32(_INT_SCALE[c]))
        data = np.clip(scaled, 0, np.iinfo(np.int16).max).astype(np.int16)
        nib.save(_nifti(data, phantom.affine), case_dir / f"{case_id}-{modality}.nii.gz")
    if truth_path is not None:
        truth_path = Path(truth_path)
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(_nifti(phantom.label.astype(np.uint8), phantom.affine), truth_path)
