"""Fuse several label maps: binary STAPLE (or majority vote) per nested region, then ET in TC in WT.

STAPLE is Warfield et al. 2004 (EM over rater sensitivity p and specificity q), initialised and iterated as
ITK's ``STAPLEImageFilter``: the posterior starts as the fraction of raters voting foreground, the prior is
its mean over the whole image; each step updates p and q (M) then the posterior (E), and stops once no p or q
moved by more than ``tolerance`` (ITK: squared change <= 1e-14). With R raters a voxel can only show 2**R decision
patterns, so each EM step runs on the pattern histogram (exact, and independent of the image size); the histogram
is counted inside the box holding all raters' foreground (outside it every voxel shows the all-background pattern).
It runs on whatever device the masks are on.
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
    """patterns: integer per voxel of ``box``, bit r set where rater r voted foreground (outside ``box`` no rater
    did, so the pattern there is 0). box: the part of the image (``shape``) that holds every rater's foreground.
    pattern_posterior: float64 (2**R,) posterior of foreground for each decision pattern.
    sensitivity, specificity: float64 (R,) per rater. iterations: EM steps run."""

    patterns: torch.Tensor
    box: tuple[slice, ...]
    shape: tuple[int, ...]
    pattern_posterior: torch.Tensor
    sensitivity: torch.Tensor
    specificity: torch.Tensor
    iterations: int

    @property
    def probability(self) -> torch.Tensor:
        """float64 (...) posterior of foreground per voxel, the input's spatial shape."""
        return self._per_voxel(self.pattern_posterior)

    def mask(self) -> torch.Tensor:
        """bool (...) voxels whose posterior exceeds 0.5 (a lookup, cheaper than thresholding ``probability``)."""
        return self._per_voxel(self.pattern_posterior > 0.5)

    def _per_voxel(self, table: torch.Tensor) -> torch.Tensor:
        """``table[pattern]`` for every voxel of the image."""
        volume = torch.full(self.shape, table[0].item(), dtype=table.dtype, device=table.device)
        volume[self.box] = lookup(table, self.patterns)
        return volume


def foreground_box(masks: torch.Tensor) -> tuple[slice, ...]:
    """The smallest box holding every rater's foreground voxels of bool (R, ...) masks; empty when there are none."""
    box = []
    for axis in range(1, masks.ndim):
        hits = torch.nonzero(_any(masks, tuple(a for a in range(masks.ndim) if a != axis))).flatten()
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if len(hits) else slice(0, 0))
    return tuple(box)


def _any(masks: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``masks.any(dims)``; on the CPU through numpy, measured 10x faster than torch's bool reductions there."""
    if masks.device.type == "cpu":
        return torch.from_numpy(np.asarray(masks.numpy().any(axis=dims)))
    return masks.any(dim=dims)


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an integer index volume; on the CPU through numpy, measured 4x faster than torch there."""
    if index.device.type == "cpu":
        return torch.from_numpy(table.numpy()[index.numpy()])
    return table[index.long()]


def decision_patterns(masks: torch.Tensor) -> torch.Tensor:
    """Integer (...) per voxel with bit r set where rater r voted foreground; the smallest dtype that holds R bits.

    On the CPU the bit packing runs in numpy (measured 2x faster than torch's uint8 kernels on 2 threads).
    """
    wide = masks.shape[0] > 8  # more raters than bits in a uint8
    if masks.device.type == "cpu":
        return torch.from_numpy(_numpy_patterns(masks.numpy(), np.dtype(np.int32 if wide else np.uint8)))
    return _torch_patterns(masks, torch.int32 if wide else torch.uint8)


def _torch_patterns(masks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch (GPU) path of :func:`decision_patterns` for bool (R, ...) masks."""
    patterns = torch.zeros(masks.shape[1:], dtype=dtype, device=masks.device)
    for rater, mask in enumerate(masks):
        patterns.bitwise_or_(mask.to(dtype).bitwise_left_shift(rater))
    return patterns


def _numpy_patterns(masks: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """numpy twin of :func:`decision_patterns` for bool (R, ...) masks."""
    patterns = np.zeros(masks.shape[1:], dtype)
    for rater, mask in enumerate(masks):
        votes = mask.view(np.uint8) if dtype == np.uint8 else mask.astype(dtype)
        patterns |= votes << dtype.type(rater)
    return patterns


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
    masks = masks.bool()
    box = foreground_box(masks)
    patterns = decision_patterns(masks[(slice(None), *box)])
    counts = torch.bincount(patterns.reshape(-1), minlength=2**raters).to(torch.float64)
    counts[0] += masks[0].numel() - patterns.numel()  # outside the box every rater voted background
    pattern_ids = torch.arange(2**raters, device=masks.device)
    bits = ((pattern_ids[:, None] >> torch.arange(raters, device=masks.device)) & 1).bool()
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
    return StapleResult(patterns, box, tuple(masks.shape[1:]), posterior, p, q, iterations)


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


def rater_regions(label_maps: Sequence[np.ndarray], device: str = "cpu") -> torch.Tensor:
    """bool (3, R, X, Y, Z): the nested regions (WT, TC, ET) of each of R BraTS 2023 label maps, on ``device``."""
    return torch.from_numpy(np.stack([regions_from_labels(labels) for labels in label_maps], axis=1)).to(device)


def staple_label_maps(label_maps: Sequence[np.ndarray], device: str = "cpu") -> tuple[np.ndarray, list[StapleResult]]:
    """STAPLE per region (WT, TC, ET), then ET inside TC inside WT.

    Returns:
        uint8 (X, Y, Z) nested label map, and the STAPLE result of each region in REGIONS order.
    """
    regions = rater_regions(label_maps, device)
    results = [staple(masks) for masks in regions]
    fused = torch.stack([result.mask() for result in results])
    return labels_from_regions(fused.cpu().numpy()), results


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
    if method == FusionMethod.STAPLE:
        return staple_label_maps(label_maps, device)[0]
    regions = rater_regions(label_maps, device)
    majority = regions.sum(1) * 2 > regions.shape[1]  # strict majority of raters, per region
    return labels_from_regions(majority.cpu().numpy())
