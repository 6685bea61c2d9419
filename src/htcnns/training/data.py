"""Training cases: generated from seeds (phantoms or synthseg), preprocessed like inference input, cut into patches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import Compose
from tqdm import tqdm

from htcnns.inference.preprocess import Prepared, preprocess, to_prepared_grid
from htcnns.inference.validate import LoadedCase
from htcnns.labels import regions_from_labels
from htcnns.training.augment import augment, make_augmentation
from htcnns.training.config import DATA_KINDS, TrainConfig
from htcnns.training.phantoms import Phantom, make_phantom
from htcnns.training.synthseg import DOMAINS, SyntheticCase, default_data_root, generate, load_sources
from htcnns.training.synthseg.v2 import generate_v2, load_sources_v2

TrainingCase = Phantom | SyntheticCase
"""A generated case: ``image`` float32 (4, X, Y, Z), ``label`` uint8 (X, Y, Z), ``affine`` (4, 4)."""


@dataclass(frozen=True)
class Sample:
    """A preprocessed case: image float32 (4, x, y, z); regions (3, x, y, z) in {0, 1}, uint8 or float32."""

    image: np.ndarray
    regions: np.ndarray


def prepare_phantom(phantom: TrainingCase) -> tuple[Prepared, np.ndarray]:
    """Run a generated case through inference preprocessing; returns it and its labels on the prepared grid."""
    reference = nib.Nifti1Image(np.zeros(phantom.label.shape, np.uint8), phantom.affine)
    prepared = preprocess(LoadedCase("phantom", phantom.image, reference))
    return prepared, to_prepared_grid(phantom.label, prepared)


def case_maker(config: TrainConfig, split: str = "train") -> Callable[[int], TrainingCase]:
    """seed -> generated case, for ``config.data``; synthseg sources load here (once), so a missing atlas
    fails before any training. ``split`` "validation" draws synthseg tumours from the held-out label maps
    (synthseg2: also the held-out anatomies; their first use registers them into the anatomy cache)."""
    if config.data == "synthseg":
        sources = load_sources(Path(config.atlas) if config.atlas else default_data_root(), split)
        domain = DOMAINS[config.domain]
        return lambda seed: generate(seed, sources, domain)
    if config.data == "synthseg2":
        sources_v2 = load_sources_v2(Path(config.atlas) if config.atlas else default_data_root(), split,
                                     threads=config.threads)
        domain = DOMAINS[config.domain]
        return lambda seed: generate_v2(seed, sources_v2, domain)
    if config.data != "phantoms":
        raise ValueError(f"data must be one of {DATA_KINDS}, got {config.data!r}")
    return lambda seed: make_phantom(seed, shape=config.phantom_shape)


def to_sample(case: TrainingCase) -> Sample:
    """A training sample: the preprocessed case and its nested regions."""
    prepared, labels = prepare_phantom(case)
    return Sample(prepared.image, regions_from_labels(labels).astype(np.uint8))  # a quarter of float32's memory


def make_samples(seeds: Iterable[int], make_case: Callable[[int], TrainingCase]) -> list[Sample]:
    """Training samples from the cases ``make_case`` generates for ``seeds``."""
    return [to_sample(make_case(seed)) for seed in tqdm(seeds, desc="cases", unit="case", disable=None)]


def random_patch(sample: Sample, size: int, rng: np.random.Generator, foreground: float = 2 / 3,
                 thick_slices: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A (4, s, s, s) image patch and its (3, s, s, s) target; a share ``foreground`` is centred on tumour.

    Augmentation: MONAI transforms (``htcnns.training.augment``), their draws taken from ``rng``; each channel
    re-sliced thick with chance ``thick_slices``.
    """
    image, target = crop(sample, size, rng, foreground)
    return augment(augmentation(thick_slices), image, target, int(rng.integers(2**31)))


def paired_patch(sample: Sample, size: int, rng: np.random.Generator, foreground: float,
                 thick_slices: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As ``random_patch``, and the same patch augmented alike without thick slices: (thick, thin, target)."""
    image, target = crop(sample, size, rng, foreground)
    seed = int(rng.integers(2**31))
    thick, augmented_target = augment(augmentation(thick_slices, paired=True), image, target, seed)
    thin, _ = augment(augmentation(0.0, paired=True), image, target, seed)
    return thick, thin, augmented_target


def crop(sample: Sample, size: int, rng: np.random.Generator, foreground: float) -> tuple[np.ndarray, np.ndarray]:
    """A (4, s, s, s) image box of ``sample`` and its float32 target, zero-padded to ``size``; a share
    ``foreground`` is centred on a tumour voxel, the rest anywhere."""
    shape = np.array(sample.image.shape[1:])
    if rng.random() < foreground:
        tumour = np.argwhere(sample.regions[0] > 0)
        centre = tumour[rng.integers(len(tumour))]
    else:
        centre = rng.integers(0, shape)
    start = np.clip(centre - size // 2, 0, np.maximum(shape - size, 0))
    box = tuple(slice(s, s + size) for s in start)
    image, target = sample.image[(slice(None), *box)], sample.regions[(slice(None), *box)]
    pad = [(0, 0)] + [(0, size - n) for n in image.shape[1:]]
    return np.pad(image, pad), np.pad(target.astype(np.float32), pad)


@cache
def augmentation(thick_slices: float = 0.0, paired: bool = False) -> Compose:
    """The MONAI augmentation pipeline of this process (one per ``thick_slices`` and ``paired``)."""
    return make_augmentation(thick_slices, paired)
