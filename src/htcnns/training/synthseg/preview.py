"""Tri-planar PNG of a generated case (four modalities, then the labels over FLAIR), and a small command:

    python -m htcnns.training.synthseg.preview --seed 0 --output docs/synthseg-example.png \
        [--data ../shared/data] [--v2]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from htcnns.inference.overlay import LABEL_COLOURS, tumour_centre  # noqa: E402
from htcnns.labels import MODALITIES  # noqa: E402
from htcnns.training.synthseg import SyntheticCase, default_data_root, generate, load_sources  # noqa: E402


def _cut(volume: np.ndarray, centre: tuple[int, int, int], plane: int) -> np.ndarray:
    """The axial (0), coronal (1) or sagittal (2) slice of ``volume`` (X, Y, Z) through ``centre``, transposed."""
    return np.take(volume, centre[2 - plane], axis=2 - plane).T


def save_preview(cases: Sequence[SyntheticCase], path: Path, dpi: int = 60) -> None:
    """One block of rows per case: t1n, t1c, t2w, t2f and labels over t2f; columns axial, coronal, sagittal,
    all through the tumour's centre. Writes ``path`` (PNG)."""
    rows = len(MODALITIES) + 1
    figure, axes = plt.subplots(3 * len(cases), rows, figsize=(2.2 * rows, 2.3 * 3 * len(cases)), squeeze=False)
    for k, case in enumerate(cases):
        centre = tumour_centre(case.label)
        for plane in range(3):
            row = axes[3 * k + plane]
            for channel, name in enumerate(MODALITIES):
                image = case.image[channel]
                low, high = np.percentile(image[image > 0], [0.5, 99.5])
                row[channel].imshow(_cut(image, centre, plane), cmap="gray", origin="lower", vmin=low, vmax=high)
                row[channel].set_title(name if plane == 0 else "", fontsize=9)
            row[-1].imshow(_cut(case.image[3], centre, plane), cmap="gray", origin="lower")
            row[-1].imshow(_cut(case.label, centre, plane), cmap=LABEL_COLOURS, origin="lower", vmin=0, vmax=3,
                           interpolation="nearest")
            source = case.tumour_source if case.anatomy == "sri24" else f"{case.tumour_source}, {case.anatomy}"
            row[-1].set_title(f"labels ({source})" if plane == 0 else "", fontsize=7)
            for axis in row:
                axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the cases of ``--seed`` (one or more) and write their preview PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default: ../shared/data)")
    parser.add_argument("--dpi", type=int, default=60)
    parser.add_argument("--v2", action="store_true", help="generator v2 (SynthSeg anatomies, synthseg.v2)")
    args = parser.parse_args(argv)
    root = args.data or default_data_root()
    if args.v2:
        from htcnns.training.synthseg.v2 import generate_v2, load_sources_v2

        sources_v2 = load_sources_v2(root)
        cases = [generate_v2(seed, sources_v2) for seed in args.seed]
    else:
        sources = load_sources(root)
        cases = [generate(seed, sources) for seed in args.seed]
    save_preview(cases, args.output, args.dpi)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
