"""Per-case random contrasts: mean intensity of each tissue class on each modality, relative to white matter.

Means are drawn uniformly from ranges (``RANGES``) that keep the orderings MRI physics imposes, so a network
learns relative contrast and shape rather than one scanner's grey values. Why each range (ratios to WM = 1):

* T1 (t1n): short T1 is bright, so WM > GM > CSF; fluid-rich necrosis and vasogenic oedema (long T1) are dark,
  necrosis darkest (near CSF when cystic); enhancing tumour before contrast is GM-like.
* T1 post-gadolinium (t1c): as t1n (drawn from the same case values, +-7 %), except that gadolinium shortens
  T1 where the blood-brain barrier is broken: the enhancing rim is brighter than WM.
* T2 (t2w): long T2 is bright: CSF brightest, then necrosis (fluid), oedema, tumour, GM, WM.
* FLAIR (t2f): T2 weighting with the free-water signal nulled: CSF dark, oedema brightest, GM slightly above WM.
* Necrosis / non-enhancing core (NCR) is a mixture, drawn once per case, of solid tissue (the NCR column of
  ``RANGES``: T1-dark, T2- and FLAIR-bright) and free fluid (the case's CSF values), so a cystic core is dark
  on FLAIR *and* bright on T2 *and* dark on T1, never a physically inconsistent combination.

The ranges were checked against real relative contrasts on DeepMedic's BraTS 2015 T1c and FLAIR (see
docs/synthseg.md for the measured z-score differences and the synthetic ones they were tuned to cover), then
widened (2026-12-02) to the subtle oedema and the bright cortex of the real training cases
(``brats-real-labelled``; medians relative to WM: oedema t1n 0.78-1.02, t2w 1.32-1.91, t2f 1.17-2.18; cortex t2w
and t2f 1.00-1.18): oedema may be nearly T1-iso and only a little brighter than the cortex on FLAIR
(``ED_OVER_GM_FLAIR``), so a network must tell them apart by shape and context, not by intensity alone.
"""

from __future__ import annotations

import numpy as np

from htcnns.labels import MODALITIES

CLASSES = ("csf", "gm", "wm", "ncr", "ed", "et")
"""Column order of the contrast table: three anatomy classes, then the BraTS tumour labels 1, 2, 3."""

#: (low, high) mean intensity relative to WM, rows t1n, t1c, t2w, t2f (MODALITIES order), columns CLASSES.
RANGES = np.array(
    [
        [(0.25, 0.45), (0.65, 0.85), (1.0, 1.0), (0.45, 0.80), (0.60, 0.98), (0.55, 0.90)],  # t1n
        [(0.25, 0.45), (0.65, 0.85), (1.0, 1.0), (0.45, 0.80), (0.60, 0.98), (1.12, 1.95)],  # t1c (ET only)
        [(2.20, 3.50), (1.03, 1.45), (1.0, 1.0), (1.30, 2.20), (1.25, 2.40), (1.30, 2.00)],  # t2w
        [(0.30, 0.60), (1.03, 1.35), (1.0, 1.0), (1.10, 2.40), (1.15, 2.30), (1.30, 2.20)],  # t2f
    ],
    dtype=np.float32,
)
VESSEL_RANGES = np.array([(0.6, 1.0), (1.3, 2.5), (0.3, 1.0), (0.3, 1.0)], dtype=np.float32)
"""(low, high) mean of blood vessels relative to WM, rows MODALITIES: gadolinium makes them bright on t1c only;
flowing blood is dark (a flow void) or GM-like on T2 and FLAIR."""
_T1C_FROM_T1N = 0.07  # t1c = t1n * (1 +- 7 %) for every class but ET
_CSF, _GM, _WM, _NCR, _ED, _ET = (CLASSES.index(name) for name in ("csf", "gm", "wm", "ncr", "ed", "et"))
_T2F = MODALITIES.index("t2f")
ED_OVER_GM_FLAIR = (1.05, 1.40)
"""Where a draw puts oedema at or below 1.05 x the cortex on FLAIR, oedema becomes cortex x uniform(this range)."""


def draw_means(rng: np.random.Generator, ranges: np.ndarray = RANGES) -> np.ndarray:
    """Mean intensities of one case, float32 (4, 6): rows MODALITIES, columns CLASSES, WM = 1, drawn from
    ``ranges`` (a domain's table; default :data:`RANGES`)."""
    means = rng.uniform(ranges[..., 0], ranges[..., 1]).astype(np.float32)
    fluid = np.float32(rng.uniform(0.0, 1.0) ** 2)  # cystic share of the necrotic core, mostly small
    means[:, _NCR] = fluid * means[:, _CSF] + (1 - fluid) * means[:, _NCR]
    t1c = means[0] * rng.uniform(1 - _T1C_FROM_T1N, 1 + _T1C_FROM_T1N, len(CLASSES)).astype(np.float32)
    t1c[_WM] = 1.0
    t1c[_ET] = means[1, _ET]
    means[1] = t1c
    if means[_T2F, _ED] <= ED_OVER_GM_FLAIR[0] * means[_T2F, _GM]:
        means[_T2F, _ED] = means[_T2F, _GM] * np.float32(rng.uniform(*ED_OVER_GM_FLAIR))
    return means


def draw_texture(rng: np.random.Generator) -> np.ndarray:
    """Heterogeneity of each tumour class, float32 (4, 3): rows MODALITIES, columns NCR/ED/ET, relative sd 0.02-0.15."""
    return rng.uniform(0.02, 0.15, (4, 3)).astype(np.float32)


def mix(probs: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Noise-free healthy image of one modality, float32 (bx, by, bz): partial-volume mixture of class means.

    Args:
        probs: float32 (3, bx, by, bz), CSF/GM/WM fractions (sum 1 in the brain, 0 outside).
        means: float32 (6,), one row of :func:`draw_means`.
    """
    return probs[0] * means[0] + probs[1] * means[1] + probs[2] * means[2]


def add_vessels(image: np.ndarray, vessels: np.ndarray, mean: float) -> None:
    """Replace anatomy by blood in place: ``image = image * (1 - vessels) + vessels * mean``."""
    image *= 1.0 - vessels
    image += vessels * np.float32(mean)


def blend(image: np.ndarray, tumour: np.ndarray, means: np.ndarray, texture: np.ndarray) -> None:
    """Replace anatomy by tumour in place: ``image = image * (1 - sum(tumour)) + sum(tumour_k * mean_k * texture_k)``.

    Args:
        image: float32 (tx, ty, tz), the tumour's box of a :func:`mix` image.
        tumour: float32 (3, tx, ty, tz), NCR/ED/ET fractions (sum <= 1).
        means: float32 (6,), one row of :func:`draw_means`.
        texture: float32 (3, tx, ty, tz), multiplicative heterogeneity per tumour class (around 1).
    """
    lesion = tumour[0] * means[3] * texture[0] + tumour[1] * means[4] * texture[1] + tumour[2] * means[5] * texture[2]
    image *= 1.0 - tumour.sum(axis=0)
    image += lesion
