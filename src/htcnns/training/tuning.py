"""Per-model ET threshold, tuned on validation cases through the real post-processing (``inference.postprocess``).

Each candidate threshold post-processes every validation case's probabilities; the one with the highest mean ET Dice
wins, ties going to the threshold closest to 0.5 (then the lower). The threshold only demotes voxels already labelled
ET, i.e. with p(ET) >= 0.5, so thresholds below 0.5 would all act like 0.5: the candidates start there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from htcnns.inference.postprocess import PostprocessParams, postprocess
from htcnns.inference.preprocess import Prepared, restore_input_grid
from htcnns.labels import REGIONS, region_dice

ET_THRESHOLDS = tuple(round(0.50 + 0.05 * i, 2) for i in range(9))
"""0.50, 0.55, ..., 0.90."""


@dataclass(frozen=True)
class ValidationPrediction:
    """One validation case, predicted once and post-processed many times.

    probs: float32 (3, x, y, z) in [0, 1], channels WT, TC, ET, on the prepared grid.
    prepared: the case's ``Prepared`` (its image may be dropped: only the brain mask and the geometry are used).
    truth: uint8 (X, Y, Z) BraTS 2023 labels on the case's own grid.
    """

    probs: np.ndarray
    prepared: Prepared
    truth: np.ndarray


def case_dice(prediction: ValidationPrediction, params: PostprocessParams) -> dict[str, float]:
    """Dice per region of one case after post-processing with ``params``, on the case's own grid."""
    labels = postprocess(prediction.probs, params, brain=prediction.prepared.brain)
    return region_dice(restore_input_grid(labels, prediction.prepared), prediction.truth)


def mean_dice(predictions: Sequence[ValidationPrediction], params: PostprocessParams) -> dict[str, float]:
    """Mean Dice per region over the cases, rounded to 4 decimals."""
    per_case = [case_dice(prediction, params) for prediction in predictions]
    return {region: round(float(np.mean([c[region] for c in per_case])), 4) for region in REGIONS}


def best_threshold(scores: Mapping[float, float]) -> float:
    """The threshold with the highest score; ties go to the one closest to 0.5, then to the lower one."""
    return min(scores, key=lambda t: (-scores[t], round(abs(t - 0.5), 9), t))


def tune_et_threshold(predictions: Sequence[ValidationPrediction], params: PostprocessParams,
                      thresholds: Sequence[float] = ET_THRESHOLDS) -> tuple[float, dict[float, float]]:
    """The best ET threshold for these cases (module docstring), and the mean ET Dice of every candidate."""
    scores = {threshold: float(np.mean([case_dice(p, replace(params, et_threshold=threshold))["ET"]
                                        for p in predictions]))
              for threshold in thresholds}
    return best_threshold(scores), scores
