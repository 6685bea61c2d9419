"""Tri-planar PNG of label maps over an MRI image, through the tumour's centre (matplotlib, no screen)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

LABEL_COLOURS = ListedColormap([(0, 0, 0, 0), (1.0, 0.2, 0.2, 0.6), (0.2, 0.9, 0.2, 0.45), (1.0, 0.9, 0.1, 0.7)])
"""Background transparent, NCR red, ED green, ET yellow."""


def tumour_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the tumour's centroid (X, Y, Z), or the volume's centre when there is no tumour."""
    voxels = np.argwhere(labels > 0)
    centre = voxels.mean(axis=0) if len(voxels) else np.array(labels.shape) / 2
    return tuple(int(c) for c in centre)


def save_overlay(image: np.ndarray, label_maps: Mapping[str, np.ndarray], path: Path, title: str = "") -> None:
    """Write one row per label map (axial, coronal, sagittal) over ``image``.

    Args:
        image: float (X, Y, Z) in RAS+ voxel order (e.g. FLAIR after ``nib.as_closest_canonical``).
        label_maps: row title -> uint8 (X, Y, Z) BraTS 2023 labels on the same grid; the first sets the centre.
        path: the PNG to write.
        title: figure title.
    """
    x, y, z = tumour_centre(next(iter(label_maps.values())))
    planes = [("axial", lambda a: a[:, :, z]), ("coronal", lambda a: a[:, y, :]), ("sagittal", lambda a: a[x, :, :])]
    low, high = np.percentile(image[image > 0], [1, 99]) if image.any() else (0, 1)
    figure, axes = plt.subplots(len(label_maps), 3, figsize=(9, 3.1 * len(label_maps)), squeeze=False)
    for row, (name, labels) in enumerate(label_maps.items()):
        for column, (plane, cut) in enumerate(planes):
            axis = axes[row, column]
            axis.imshow(cut(image).T, cmap="gray", origin="lower", vmin=low, vmax=high)
            axis.imshow(cut(labels).T, cmap=LABEL_COLOURS, origin="lower", vmin=0, vmax=3, interpolation="nearest")
            axis.set_title(f"{name}: {plane}", fontsize=9)
            axis.axis("off")
    figure.suptitle(title + "  (red NCR, green ED, yellow ET)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
