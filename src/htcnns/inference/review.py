"""The review flag: how much the ensemble's networks disagree on a case, from what segmenting it computed anyway.

Per region (WT, TC, ET) the networks' post-processed label maps are compared pairwise (Dice; two empty masks
agree) and by volume (spread of the networks' volumes over their mean). The disagreement score is one minus the
mean pairwise Dice over WT and TC (ET is often tiny, where Dice swings on a few voxels); a case needs review when
the score or the WT volume spread passes its threshold, or when the networks do not agree a tumour is there at all.
The thresholds come from the real labelled cases (docs/review.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from htcnns.labels import REGIONS, regions_from_labels

SCORE_THRESHOLD = 0.25
"""Disagreement score above which a case is flagged (docs/review.md)."""
VOLUME_SPREAD_THRESHOLD = 0.5
"""WT volume spread (max - min over mean) above which a case is flagged."""


@dataclass(frozen=True)
class Review:
    """The networks' agreement on one case, and whether a person should look at it."""

    score: float
    pairwise_dice: dict[str, float]
    volume_spread: dict[str, float]
    needs_review: bool
    reason: str

    def to_json(self) -> dict[str, object]:
        """The case's review fields in the report."""
        return {"needs_review": self.needs_review, "review_reason": self.reason, "review_score": round(self.score, 4),
                "networks_dice": {k: round(v, 4) for k, v in self.pairwise_dice.items()},
                "networks_volume_spread": {k: round(v, 4) for k, v in self.volume_spread.items()}}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _spread(volumes: Sequence[int]) -> float:
    mean = float(np.mean(volumes))
    return 0.0 if mean == 0 else (max(volumes) - min(volumes)) / mean


def review_case(per_model: Sequence[np.ndarray], score_threshold: float = SCORE_THRESHOLD,
                spread_threshold: float = VOLUME_SPREAD_THRESHOLD) -> Review:
    """Review of one case from each network's post-processed label map (uint8, one grid, BraTS 2023 labels)."""
    masks = [regions_from_labels(labels).astype(bool) for labels in per_model]  # (3, ...) per network: WT, TC, ET
    pairs = list(itertools.combinations(range(len(masks)), 2))
    dice = {region: float(np.mean([_dice(masks[i][r], masks[j][r]) for i, j in pairs])) if pairs else 1.0
            for r, region in enumerate(REGIONS)}
    spread = {region: _spread([int(m[r].sum()) for m in masks]) for r, region in enumerate(REGIONS)}
    score = 1.0 - (dice["WT"] + dice["TC"]) / 2
    found = [bool(m[0].any()) for m in masks]
    reasons = []
    if any(found) and not all(found):
        reasons.append(f"{found.count(False)} of {len(found)} networks found no tumour")
    if score > score_threshold:
        reasons.append(f"networks disagree (WT Dice {dice['WT']:.2f}, TC Dice {dice['TC']:.2f} between them)")
    if spread["WT"] > spread_threshold:
        reasons.append(f"whole-tumour volumes differ by {100 * spread['WT']:.0f} % of their mean between networks")
    return Review(score, dice, spread, bool(reasons), "; ".join(reasons))
