"""Fuse several label maps: binary STAPLE (or majority vote) per nested region, then ET in TC in WT.

STAPLE is Warfield et al. 2004 (EM over rater sensitivity p and specificity q), initialised and iterated as
ITK's ``STAPLEImageFilter``: the posterior starts as the fraction of raters voting foreground, the prior is
its mean over the whole image; each step updates p and q (M) then the posterior (E), and stops once no p or q
moved by more than ``tolerance`` (ITK: squared change <= 1e-14). With R raters a voxel can only show 2**R decision
patterns, so each EM step runs on the pattern histogram (exact, and independent of the image size); it runs on
whatever device the masks are on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from htcnns.labels import labels_from_regions, regions_from_labels

MAX_RATERS = 20


class FusionMethod(StrEnum):
    """How the models' label maps are combined."""

    STAPLE = "staple"
    MAJORITY = "majority"


@dataclass(frozen=True)
class StapleResult:
    """probability: float64 (...) posterior of foreground per voxel, the input's spatial shape.
    sensitivity, specificity: float64 (R,) per rater. iterations: EM steps run."""

    probability: torch.Tensor
    sensitivity: torch.Tensor
    specificity: torch.Tensor
    iterations: int


def staple(masks: torch.Tensor, *, tolerance: float = 1e-7, max_iterations: int = 10_000) -> StapleResult:
    """Binary STAPLE of R raters.

    Args:
        masks: bool (R, ...) rater decisions on one grid; 1 <= R <= MAX_RATERS.
        tolerance: convergence threshold on every rater's sensitivity and specificity.
        max_iterations: EM steps at most.
    """
    raters = masks.shape[0]
    if not 1 <= raters <= MAX_RATERS:
        raise ValueError(f"STAPLE needs 1 to {MAX_RATERS} raters, got {raters}")
    flat = masks.reshape(raters, -1).to(torch.int64)
    weights = (2 ** torch.arange(raters, device=masks.device))[:, None]
    pattern_of_voxel = (flat * weights).sum(0)
    counts = torch.bincount(pattern_of_voxel, minlength=2**raters).to(torch.float64)
    bits = ((torch.arange(2**raters, device=masks.device)[:, None] >> torch.arange(raters, device=masks.device))
            & 1).bool()
    posterior = bits.sum(1).double() / raters  # ITK's start: the fraction of raters voting foreground
    prior = (counts * posterior).sum() / counts.sum()
    p = q = torch.zeros(raters, dtype=torch.float64, device=masks.device)
    iterations = 0
    while iterations < max_iterations:
        new_p, new_q = _update_performance(bits, counts, posterior, p, q)
        posterior = _pattern_posterior(bits, prior, new_p, new_q)
        converged = iterations > 0 and bool(
            ((new_p - p).abs().max() <= tolerance) & ((new_q - q).abs().max() <= tolerance)
        )
        p, q, iterations = new_p, new_q, iterations + 1
        if converged:
            break
    probability = posterior[pattern_of_voxel].reshape(masks.shape[1:])
    return StapleResult(probability, p, q, iterations)


def _pattern_posterior(bits: torch.Tensor, prior: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """P(truth = 1 | pattern) for each of the 2**R patterns (E-step)."""
    alpha = torch.where(bits, p, 1 - p).prod(dim=1) * prior
    beta = torch.where(bits, 1 - q, q).prod(dim=1) * (1 - prior)
    total = alpha + beta
    return torch.where(total > 0, alpha / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def _update_performance(
    bits: torch.Tensor, counts: torch.Tensor, posterior: torch.Tensor, p: torch.Tensor, q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """New sensitivity and specificity per rater (M-step); a rater keeps its value where undefined."""
    truly_on, truly_off = counts * posterior, counts * (1 - posterior)
    p_den, q_den = truly_on.sum(), truly_off.sum()
    p_num = (truly_on[:, None] * bits).sum(0)
    q_num = (truly_off[:, None] * ~bits).sum(0)
    new_p = p_num / p_den if p_den > 0 else p
    new_q = q_num / q_den if q_den > 0 else q
    return new_p, new_q


def fuse_regions(masks: torch.Tensor, method: FusionMethod) -> torch.Tensor:
    """One fused bool mask from R rater masks (R, ...): STAPLE posterior > 0.5, or a strict majority."""
    if method == FusionMethod.MAJORITY:
        return masks.sum(0) * 2 > masks.shape[0]
    return staple(masks).probability > 0.5


def fuse_label_maps(
    label_maps: Sequence[np.ndarray], method: FusionMethod = FusionMethod.STAPLE, device: str = "cpu"
) -> np.ndarray:
    """Fuse BraTS 2023 label maps region by region (WT, TC, ET), then paint ET inside TC inside WT.

    Args:
        label_maps: uint8 (X, Y, Z) each, values {0, NCR, ED, ET}, one grid.
        method: STAPLE or majority vote.
        device: torch device for the fusion arithmetic.

    Returns:
        uint8 (X, Y, Z) nested label map.
    """
    regions = torch.from_numpy(np.stack([regions_from_labels(labels) for labels in label_maps])).to(device)
    fused = torch.stack([fuse_regions(regions[:, region], method) for region in range(regions.shape[1])])
    return labels_from_regions(fused.cpu().numpy())
