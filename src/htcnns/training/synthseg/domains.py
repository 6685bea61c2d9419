"""Imaging domains for the transfer-learning experiment: how a target population's cases differ from the source's.

The paper pre-trains on adult glioma (BraTS GLI) and fine-tunes on paediatric tumours (BraTS PED) and on
sub-Saharan-Africa scans (BraTS SSA). Here each is a *synthetic* domain of the generator, a caricature of what
the paper's Section 2 says sets that data apart:

* ``adult``: the generator's defaults (source domain).
* ``paediatric``: mostly non-enhancing tumours (70 % of cases keep no enhancing part; the others enhance weakly),
  70 % centred in the posterior fossa (cerebellum, brainstem), a less myelinated brain (weaker T1 GM/WM contrast).
* ``ssa``: older, lower-field scanners and late presentation: lower SNR, thick slices in most scans, stronger bias
  field, larger tumours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from htcnns.training.synthseg.artefacts import Acquisition
from htcnns.training.synthseg.contrast import CLASSES, RANGES


@dataclass(frozen=True)
class Domain:
    """What the generator draws differently for one population.

    enhancing_share: probability that a case keeps its enhancing tumour (else ET becomes non-enhancing core).
    overrides: (modality row, class name) -> (low, high) mean range replacing :data:`contrast.RANGES`' entry.
    posterior_fossa: share of tumours centred in the cerebellum / brainstem rather than cerebral white matter.
    tumour_zoom: range of the scale applied to real tumour label maps.
    acquisition: noise, slice thickness and bias field ranges.
    """

    name: str
    enhancing_share: float = 1.0
    overrides: tuple[tuple[int, str, float, float], ...] = ()
    posterior_fossa: float = 0.0
    tumour_zoom: tuple[float, float] = (0.7, 1.2)
    acquisition: Acquisition = field(default_factory=Acquisition)

    def ranges(self) -> np.ndarray:
        """The contrast table of this domain, float32 (4, 6, 2)."""
        table = RANGES.copy()
        for row, name, low, high in self.overrides:
            table[row, CLASSES.index(name)] = (low, high)
        return table


ADULT = Domain("adult")
PAEDIATRIC = Domain(
    "paediatric",
    enhancing_share=0.3,
    overrides=((1, "et", 1.05, 1.40), (0, "gm", 0.80, 0.92)),
    posterior_fossa=0.7,
)
SSA = Domain(
    "ssa",
    tumour_zoom=(0.9, 1.3),
    acquisition=Acquisition(noise_sd=(0.06, 0.14), thick_slices=0.9, slice_mm=(3.0, 6.0), bias=(0.08, 0.2)),
)
DOMAINS = {domain.name: domain for domain in (ADULT, PAEDIATRIC, SSA)}
