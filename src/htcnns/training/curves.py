"""``training-curves.png``: the loss of every step (and its trailing mean) and the validation Dice per region.

Drawn with matplotlib's object API on an Agg canvas: no screen, and no change to pyplot's global backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from htcnns.inference.io import atomic_write
from htcnns.labels import REGIONS

CURVES_NAME = "training-curves.png"
SMOOTHING_STEPS = 20


def trailing_mean(values: Sequence[float], window: int = SMOOTHING_STEPS) -> np.ndarray:
    """Mean of each value and up to ``window - 1`` values before it (the progress bar's "loss")."""
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    stop = np.arange(1, len(values) + 1)
    start = np.maximum(stop - window, 0)
    return (sums[stop] - sums[start]) / (stop - start)


def write_curves(path: Path, losses: Sequence[float], evaluations: Sequence[Mapping[str, Any]]) -> None:
    """Write the two-panel PNG atomically.

    Args:
        losses: the loss of each step, step 1 first.
        evaluations: ``{"step": n, "dice": {"WT": ..., "TC": ..., "ET": ...}}`` per validation, in step order
            (``htcnns train``'s last one is the exported model's, with its tuned ET threshold if any).
    """
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, dice_axes = figure.subplots(1, 2)
    steps = np.arange(1, len(losses) + 1)
    loss_axes.plot(steps, losses, color="0.75", linewidth=0.8, label="per step")
    loss_axes.plot(steps, trailing_mean(losses), color="C0", label=f"mean of last {SMOOTHING_STEPS}")
    loss_axes.set(xlabel="step", ylabel="Dice + BCE loss", title="training loss")
    loss_axes.legend()
    for region in REGIONS:
        dice_axes.plot([e["step"] for e in evaluations], [e["dice"][region] for e in evaluations], marker="o",
                       label=region)
    dice_axes.set(xlabel="step", ylabel="Dice", ylim=(0, 1), title="validation Dice (post-processed)")
    if evaluations:
        dice_axes.legend()
    else:
        dice_axes.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=dice_axes.transAxes)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=90), suffix=".part.png")
