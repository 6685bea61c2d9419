"""Quality control of one case for people: region volumes in ml and a tri-planar picture through the tumour.

The picture has two rows (T1c, FLAIR) and three planes (axial, coronal, sagittal) cut through the centre of mass
of the whole tumour (of the brain when nothing is segmented), with the NCR/ED/ET overlay and a legend. Images are
made RAS+ first (``nib.as_closest_canonical``) and shown in the radiological convention: the patient's right on
the left of the axial and coronal panels, anterior on the left of the sagittal panel; each panel's edges carry the
direction letters, and its title the slice as the file's own voxel index and as the world position in mm.
Matplotlib is used without pyplot (an Agg canvas per figure), so nothing global changes; files are written
atomically (``io.atomic_write``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from htcnns.inference.cases import case_id_problem, display_id
from htcnns.inference.io import atomic_write, quiet_nibabel
from htcnns.inference.overlay import LABEL_COLOURS
from htcnns.labels import Label

REGION_VALUES: dict[str, tuple[int, ...]] = {
    "NCR": (Label.NCR,), "ED": (Label.ED,), "ET": (Label.ET,),
    "TC": (Label.NCR, Label.ET), "WT": (Label.NCR, Label.ED, Label.ET),
}
"""BraTS 2023 label values of each reported volume, in the order reports and pages show them."""

LEGEND = (("NCR", LABEL_COLOURS.colors[1]), ("ED", LABEL_COLOURS.colors[2]), ("ET", LABEL_COLOURS.colors[3]))
PICTURE_DPI = 80
THUMBNAIL_PX = 200

# (plane, RAS axis cut, screen-left letter, screen-right letter, top letter, bottom letter)
_PLANES = (("axial", 2, "R", "L", "A", "P"), ("coronal", 1, "R", "L", "S", "I"), ("sagittal", 0, "A", "P", "S", "I"))
_WORLD = "xyz"
_FILE_AXES = "ijk"


@dataclass(frozen=True)
class CaseQC:
    """What ``write_case_qc`` wrote for one case: file paths inside the QC folder, volumes in ml, seconds taken."""

    case_id: str
    picture: Path
    thumbnail: Path
    volumes_ml: dict[str, float]
    seconds: float

    def to_report(self) -> dict[str, Any]:
        """The keys this adds to the case's report entry (file names relative to the QC folder)."""
        return {"volumes_ml": self.volumes_ml, "qc_picture": self.picture.name, "qc_thumbnail": self.thumbnail.name}


@dataclass(frozen=True)
class _View:
    """One case made RAS+: images and labels (X, Y, Z), the canonical affine and the file's orientation."""

    t1c: np.ndarray
    flair: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    file_affine: np.ndarray
    shape: tuple[int, ...]


def voxel_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in ml (|det| of the affine's 3x3 part, mm^3, / 1000)."""
    return abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0


def region_volumes_ml(labels: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Volumes in ml of NCR (1), ED (2), ET (3), TC (1+3) and WT (1+2+3) of a BraTS 2023 label map.

    Values are rounded to 0.001 ml; a BraTS 2021 map (ET = 4) must be converted first (4 counts as nothing here).
    """
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:  # one pass instead of a sort (0.15 s on a BraTS grid)
        count = dict(enumerate(np.bincount(labels.ravel()).tolist()))
    else:
        values, counts = np.unique(labels, return_counts=True)
        count = dict(zip(values.tolist(), counts.tolist(), strict=True))
    size = voxel_ml(affine)
    return {name: round(sum(count.get(int(v), 0) for v in vals) * size, 3) for name, vals in REGION_VALUES.items()}


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with quiet_nibabel():
        image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array), np.asarray(affine, float)))
    return np.asarray(image.dataobj), image.affine


def _view(t1c: np.ndarray, flair: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> _View:
    shapes = {np.shape(t1c), np.shape(flair), np.shape(labels)}
    if len(shapes) != 1 or len(np.shape(labels)) != 3:
        raise ValueError(f"t1c, flair and labels must be 3-D arrays of one shape, got {sorted(shapes)}")
    ras_t1c, ras_affine = _canonical(np.asarray(t1c, np.float32), affine)
    ras_flair, ras_labels = (_canonical(a, affine)[0] for a in (np.asarray(flair, np.float32),
                                                                  np.asarray(labels, np.uint8)))
    return _View(ras_t1c, ras_flair, ras_labels, ras_affine, np.asarray(affine, float), np.shape(labels))


def slice_centre(labels: np.ndarray, image: np.ndarray) -> tuple[int, int, int]:
    """Voxel (X, Y, Z) of the tumour's centre of mass, else of the brain (image != 0), else the volume's centre."""
    for mask in (labels > 0, _brain(image)):
        voxels = np.argwhere(mask)
        if len(voxels):
            return tuple(int(round(c)) for c in voxels.mean(axis=0))
    return tuple(int(s) // 2 for s in labels.shape)


def _brain(image: np.ndarray) -> np.ndarray:
    """Voxels that hold signal: non-zero and finite (z-scored images are negative inside the brain too)."""
    return np.isfinite(image) & (image != 0)


def _cropped(view: _View, margin: int = 3) -> _View:
    """The view cut to the bounding box of brain and tumour (plus ``margin``), so panels show the head."""
    shown = _brain(view.t1c) | _brain(view.flair) | (view.labels > 0)
    if not shown.any():
        return view
    spans = [np.flatnonzero(shown.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    low = np.maximum(np.array([span[0] for span in spans]) - margin, 0)
    high = np.minimum(np.array([span[-1] for span in spans]) + margin + 1, view.labels.shape)
    box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))
    affine = view.affine.copy()
    affine[:3, 3] = view.affine[:3, :3] @ low + view.affine[:3, 3]  # the crop's voxel 0 keeps its world position
    return replace(view, t1c=view.t1c[box], flair=view.flair[box], labels=view.labels[box], affine=affine)


def _window(image: np.ndarray) -> tuple[float, float]:
    inside = image[_brain(image)]
    if inside.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(inside, [1, 99])
    return float(low), float(max(high, low + 1e-6))


def _cut(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A plane of a RAS+ volume as rows x columns for ``origin="lower"``, flipped to the radiological view."""
    plane = np.moveaxis(volume, axis, 0)[index].T  # a view; rows: the higher remaining axis, columns: the lower one
    return plane[:, ::-1]  # R (axial, coronal) or A (sagittal) on the left


def _aspect(zooms: np.ndarray, axis: int) -> float:
    rest = [a for a in range(3) if a != axis]
    return float(zooms[rest[1]] / zooms[rest[0]])


def _position_text(view: _View, axis: int, centre: tuple[int, int, int]) -> str:
    world = view.affine @ np.array([*centre, 1.0])
    file_voxel = np.rint(np.linalg.solve(view.file_affine, world)).astype(int)
    file_axis = int(np.flatnonzero(nib.io_orientation(view.file_affine)[:, 0] == axis)[0])
    return (f"{_FILE_AXES[file_axis]}={file_voxel[file_axis]} (of {view.shape[file_axis]})  "
            f"{_WORLD[axis]}={world[axis]:+.1f} mm")


def _draw_panel(axis_plot: Any, volume: np.ndarray, labels: np.ndarray, window: tuple[float, float], plane: tuple,
                centre: tuple[int, int, int], zooms: np.ndarray, title: str, letters: bool = True) -> None:
    _, axis, left, right, top, bottom = plane
    aspect = _aspect(zooms, axis)
    axis_plot.imshow(_cut(volume, axis, centre[axis]), cmap="gray", origin="lower", vmin=window[0], vmax=window[1],
                     aspect=aspect, interpolation="bilinear")
    axis_plot.imshow(_cut(labels, axis, centre[axis]), cmap=LABEL_COLOURS, origin="lower", vmin=0, vmax=3,
                     aspect=aspect, interpolation="nearest")
    axis_plot.set_axis_off()
    if title:
        axis_plot.set_title(title, fontsize=8, y=1.0)  # a fixed place: matplotlib skips its tick-box search
    if letters:
        style = {"color": "white", "fontsize": 8, "transform": axis_plot.transAxes, "weight": "bold"}
        for text, x, y, ha, va in ((left, 0.01, 0.5, "left", "center"), (right, 0.99, 0.5, "right", "center"),
                                   (top, 0.5, 0.99, "center", "top"), (bottom, 0.5, 0.01, "center", "bottom")):
            axis_plot.text(x, y, text, ha=ha, va=va, **style)


def _save_png(figure: Figure, path: Path, dpi: int) -> None:
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=dpi), suffix=".part")


def save_qc_picture(t1c: np.ndarray, flair: np.ndarray, labels: np.ndarray, affine: np.ndarray, path: Path,
                    title: str) -> None:
    """Write the tri-planar QC PNG: rows T1c and FLAIR, columns axial, coronal, sagittal, with the label overlay.

    Args:
        t1c, flair, labels: (X, Y, Z) arrays of one grid in the file's voxel order; labels BraTS 2023 (ET = 3).
        affine: their common 4x4 voxel-to-world matrix (mm).
        path: the PNG (about 800 x 580 px, tens of KB to ~250 KB); written atomically.
        title: figure title (e.g. the case id).

    Raises:
        ValueError: the arrays are not 3-D or differ in shape.
        OutputError: the file cannot be written.
    """
    _draw_picture(_cropped(_view(t1c, flair, labels, affine)), path, title)


def _draw_picture(view: _View, path: Path, title: str) -> None:
    """``save_qc_picture`` of a view already made RAS+ and cropped."""
    centre = slice_centre(view.labels, _brain(view.t1c) | _brain(view.flair))
    zooms = np.sqrt((view.affine[:3, :3] ** 2).sum(axis=0))
    figure = Figure(figsize=(10, 7.2))
    axes = figure.subplots(2, 3)
    for row, (name, volume) in enumerate((("T1c", view.t1c), ("FLAIR", view.flair))):
        window = _window(volume)
        for column, plane in enumerate(_PLANES):
            title_text = f"{name} {plane[0]}  {_position_text(view, plane[1], centre)}"
            _draw_panel(axes[row, column], volume, view.labels, window, plane, centre, zooms, title_text)
    handles = [Patch(facecolor=colour[:3], label=name) for name, colour in LEGEND]
    figure.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    figure.suptitle(f"{title}  (radiological view: patient right on the left)", fontsize=10)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.07, wspace=0.04, hspace=0.16)
    _save_png(figure, path, PICTURE_DPI)


def save_thumbnail(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, path: Path,
                   size_px: int = THUMBNAIL_PX) -> None:
    """Write a small axial PNG (``size_px`` square) through the tumour's centre with the overlay, for web pages."""
    _draw_thumbnail(_cropped(_view(image, image, labels, affine)), path, size_px)


def _draw_thumbnail(view: _View, path: Path, size_px: int = THUMBNAIL_PX) -> None:
    """``save_thumbnail`` of a view already made RAS+ and cropped (its T1c shown)."""
    centre = slice_centre(view.labels, view.t1c)
    zooms = np.sqrt((view.affine[:3, :3] ** 2).sum(axis=0))
    figure = Figure(figsize=(size_px / 100, size_px / 100), facecolor="black")
    axis = figure.add_axes((0, 0, 1, 1))
    _draw_panel(axis, view.t1c, view.labels, _window(view.t1c), _PLANES[0], centre, zooms, "", letters=False)
    _save_png(figure, path, 100)


def qc_file_names(case_id: str) -> tuple[str, str]:
    """The picture's and the thumbnail's file names inside the QC folder: ``<id>.png``, ``<id>-thumb.png``."""
    return f"{case_id}.png", f"{case_id}-thumb.png"


def write_case_qc(case_id: str, t1c: np.ndarray, flair: np.ndarray, labels: np.ndarray, affine: np.ndarray,
                  qc_dir: Path) -> CaseQC:
    """Write one case's QC picture and thumbnail into ``qc_dir`` and measure its region volumes.

    Args:
        t1c, flair, labels, affine: as for ``save_qc_picture`` (labels: the case's output, BraTS 2023 values).

    Raises:
        ValueError: the case id cannot name a file in ``qc_dir``, or the arrays do not match.
        OutputError: a file cannot be written.
    """
    start = time.perf_counter()
    problem = case_id_problem(case_id)
    if problem:
        raise ValueError(f"{display_id(case_id)}: {problem}")
    picture, thumbnail = (qc_dir / name for name in qc_file_names(case_id))
    view = _cropped(_view(t1c, flair, labels, affine))  # made once for both pictures
    _draw_picture(view, picture, case_id)
    _draw_thumbnail(view, thumbnail)
    return CaseQC(case_id, picture, thumbnail, region_volumes_ml(labels, affine), time.perf_counter() - start)


def load_qc_inputs(t1c_path: Path, flair_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray,
                                                                                 np.ndarray, np.ndarray]:
    """Read T1c, FLAIR and a label map from disk (trailing singleton axes squeezed) for ``write_case_qc``.

    Returns:
        t1c, flair (float32), labels (uint8) in the t1c file's voxel order, and the t1c affine.

    Raises:
        ValueError: the three files are not on one grid (shape and affine within 1e-3 mm).
    """
    images = []
    with quiet_nibabel():
        for path in (t1c_path, flair_path, labels_path):
            images.append(nib.funcs.squeeze_image(nib.load(path)))
    reference = images[0]
    for path, image in zip((flair_path, labels_path), images[1:], strict=True):
        if image.shape != reference.shape or not np.allclose(image.affine, reference.affine, atol=1e-3):
            raise ValueError(f"{path.name} is not on the grid of {t1c_path.name} "
                             f"(shape {image.shape} vs {reference.shape}, or a different affine)")
    t1c, flair = (np.asarray(image.dataobj, np.float32) for image in images[:2])
    return t1c, flair, np.asarray(images[2].dataobj).astype(np.uint8), reference.affine
