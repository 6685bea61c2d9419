"""Is a native case's registration to the atlas believable? Measured on the resampled case, before it is segmented.

A registration can converge to nonsense without an error: a header with a wrong orientation (the head upside down),
a T1c that holds only part of the brain, a scan that is not a head. Three figures catch those (measured on real
TCGA T1c scans, simulated native scans and real head shapes, docs/native-scans.md):

- brain coverage: the share of the atlas brain inside each sequence's field of view;
- similarity: the correlation of the registered T1c with the SRI24 T1 head within 20 mm of the brain (the
  brain, its CSF and skull, all dark or bright on T1 alike whatever the scanner);
- scales: the singular values of the atlas -> T1c matrix (a head is not squashed by a third);
- twins: pairs of sequences that are one scan given twice (a mapping naming one file for two modalities). Two
  contrasts of one brain correlate less, though T1 and T1c can come close (0.80 on a real BraTS case, 0.93 on a
  rendered head without tumour), so only near-identity counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
import SimpleITK as sitk

MIN_COVERAGE = 0.5
"""Below this share of the brain in the T1c's field of view the case is refused: too little to register."""
WARN_COVERAGE = 0.9
"""Below this share in any sequence the case is segmented with a warning (the rest of the brain has no signal)."""
MIN_SIMILARITY = 0.35
"""Below this correlation the registration has failed (upside-down headers measured 0.20 and 0.30; real T1c 0.64)."""
WARN_SIMILARITY = 0.5
SCALE_RANGE = (0.6, 1.6)
"""Atlas -> T1c scales outside this range, or one axis more than ``MAX_ANISOTROPY`` times another, are warned."""
MAX_ANISOTROPY = 1.35
TWIN_CORRELATION = 0.99
"""Two sequences correlating above this within the brain are one scan (a scan with itself: 1.00; real pairs of
contrasts on the atlas grid: -0.80 to 0.80)."""
SEQUENCE_NAMES = {"t1n": "T1", "t1c": "T1c", "t2w": "T2", "t2f": "FLAIR"}


@dataclass(frozen=True)
class RegistrationCheck:
    """The figures of one prepared case: ``coverage`` per modality, ``similarity``, ``scales`` (largest first) and
    ``twins``: (modality, modality, correlation) of the pairs above ``TWIN_CORRELATION``."""

    coverage: dict[str, float]
    similarity: float
    scales: tuple[float, float, float]
    twins: tuple[tuple[str, str, float], ...] = ()

    def failures(self) -> list[str]:
        """Why the registration cannot be used (empty when it can)."""
        found = []
        if self.coverage["t1c"] < MIN_COVERAGE:
            found.append(f"the T1c's field of view holds only {100 * self.coverage['t1c']:.0f} % of the brain "
                         f"(at least {100 * MIN_COVERAGE:.0f} % is needed; give a T1c covering the whole head)")
        elif self.similarity < MIN_SIMILARITY:
            found.append(f"the registered T1c does not look like the atlas head (correlation {self.similarity:.2f} "
                         f"near the brain, below {MIN_SIMILARITY}): a wrong orientation in its header, a series "
                         "that is not the T1c, or not a head scan")
        found += [f"the {SEQUENCE_NAMES[a]} and the {SEQUENCE_NAMES[b]} are one scan given twice (correlation "
                  f"{r:.2f} within the brain); give each modality its own series" for a, b, r in self.twins]
        return found

    def warnings(self) -> list[str]:
        """What makes the result doubtful without making it unusable."""
        found = [f"the {SEQUENCE_NAMES[m]} covers only {100 * share:.0f} % of the brain; the rest is segmented "
                 "without it" for m, share in self.coverage.items() if share < WARN_COVERAGE]
        if MIN_SIMILARITY <= self.similarity < WARN_SIMILARITY:
            found.append(f"the registered T1c resembles the atlas head only weakly (correlation "
                         f"{self.similarity:.2f} near the brain); check the overlay")
        low, high = SCALE_RANGE
        if min(self.scales) < low or max(self.scales) > high or max(self.scales) / min(self.scales) > MAX_ANISOTROPY:
            found.append(f"the atlas was stretched by {' x '.join(f'{s:.2f}' for s in self.scales)} to fit; "
                         "check the overlay")
        return found

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> dict[str, float]:
        """The three figures as numbers (benchmarks print them): similarity, the least coverage, anisotropy."""
        return {"similarity": self.similarity, "least_coverage": min(self.coverage.values()),
                "anisotropy": max(self.scales) / min(self.scales)}


def check_registration(atlas_head: sitk.Image, near_brain: np.ndarray, atlas_brain: np.ndarray,
                       images: Mapping[str, sitk.Image], inside: dict[str, np.ndarray],
                       matrix: np.ndarray) -> RegistrationCheck:
    """The figures for a case resampled onto the atlas grid: ``images`` the registered sequences, ``inside`` per
    modality where its field of view reaches, ``matrix`` the 3 x 3 part of the atlas -> T1c transform."""
    coverage = {m: float((atlas_brain & seen).sum() / atlas_brain.sum()) for m, seen in inside.items()}
    region = near_brain & inside["t1c"]
    similarity = _correlation(sitk.GetArrayViewFromImage(atlas_head)[region],
                              sitk.GetArrayViewFromImage(images["t1c"])[region])
    scales = np.linalg.svd(np.asarray(matrix, float).reshape(3, 3), compute_uv=False)
    seen_by_all = atlas_brain & np.logical_and.reduce(list(inside.values()))
    values = {m: sitk.GetArrayViewFromImage(image)[seen_by_all] for m, image in images.items()}
    pairs = ((a, b, _correlation(values[a], values[b])) for a, b in combinations(values, 2))
    twins = tuple((a, b, r) for a, b, r in pairs if r > TWIN_CORRELATION)
    return RegistrationCheck(coverage, similarity, tuple(float(s) for s in scales), twins)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either is constant or there are fewer than two values."""
    return float(np.corrcoef(a, b)[0, 1]) if a.size > 1 and a.std() > 0 and b.std() > 0 else 0.0
