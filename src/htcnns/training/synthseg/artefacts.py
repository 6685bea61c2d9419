"""Acquisition artefacts applied to each modality: gamma, bias field, blur and thick slices, noise.

Order follows the signal chain: a random gamma bends the contrast curve (applied to the class means, which is
exact for the noise-free piecewise-constant image up to partial-volume voxels, and free), coil sensitivity
(bias) multiplies the object, the point-spread function and slice profile blur it, thermal noise is added.
Functions take and return float32 arrays of the output box and draw from the caller's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from htcnns.training.phantoms import _smooth_field

FLOOR = 1e-3
"""Smallest brain intensity (relative to WM), so every brain voxel stays non-zero for preprocessing."""


@dataclass(frozen=True)
class Acquisition:
    """Ranges of the acquisition draws: noise sd (relative to WM), probability of thick slices and their
    thickness (mm), bias field amplitude."""

    noise_sd: tuple[float, float] = (0.01, 0.07)
    thick_slices: float = 0.4
    slice_mm: tuple[float, float] = (2.0, 5.0)
    bias: tuple[float, float] = (0.0, 0.12)


def bias_field(rng: np.random.Generator, image: np.ndarray, amplitude: tuple[float, float]) -> np.ndarray:
    """Multiply by ``exp(a * smooth field)``, a drawn from ``amplitude`` (adult 0-0.12: up to about
    +-27 % at 2 sd), correlation 40-80 voxels."""
    field = _smooth_field(rng, image.shape, float(rng.uniform(40.0, 80.0)))
    field *= np.float32(rng.uniform(*amplitude))
    return image * np.exp(field)


def blur(rng: np.random.Generator, image: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    """With probability 0.5 a Gaussian point-spread function (sigma 0.3-1 voxel); with probability
    ``acquisition.thick_slices`` (default 0.4) thick slices.

    Thick slices: along one axis (z twice as likely), a slice profile of FWHM ``acquisition.slice_mm`` (default
    2-5 mm), then sampling every `thickness` voxels and linear interpolation back to 1 mm (resolution loss).
    """
    sigma = np.full(3, rng.uniform(0.3, 1.0) if rng.random() < 0.5 else 0.0)
    thickness, axis = 1.0, 2
    if rng.random() < acquisition.thick_slices:
        axis = int(rng.choice(3, p=[0.25, 0.25, 0.5]))
        thickness = float(rng.uniform(*acquisition.slice_mm))
        sigma[axis] = np.hypot(sigma[axis], thickness / 2.355)
    if sigma.any():
        image = ndimage.gaussian_filter(image, sigma, truncate=2.5)
    return _resample_slices(image, axis, thickness, float(rng.uniform(0.0, thickness))) if thickness > 1 else image


def _resample_slices(image: np.ndarray, axis: int, thickness: float, offset: float) -> np.ndarray:
    """Keep slices every ``thickness`` voxels along ``axis`` (first at ``offset``), linearly interpolate between."""
    n = image.shape[axis]
    kept = np.arange(offset, n - 1, thickness)
    if kept.size < 2:
        return image
    slab = np.take(image, np.round(kept).astype(int), axis=axis)
    position = np.clip((np.arange(n) - kept[0]) / thickness, 0, kept.size - 1)
    below = np.minimum(np.floor(position).astype(int), kept.size - 2)
    weight = (position - below).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = n
    weight = weight.reshape(shape)
    return np.take(slab, below, axis=axis) * (1 - weight) + np.take(slab, below + 1, axis=axis) * weight


def noise_volume(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 ``shape``; :func:`add_noise` reads it mirrored differently for each modality."""
    return rng.standard_normal(shape, dtype=np.float32)


def add_noise(rng: np.random.Generator, image: np.ndarray, unit: np.ndarray, channel: int,
              sd: tuple[float, float]) -> np.ndarray:
    """Add Gaussian noise of sd drawn from ``sd`` (adult 0.01-0.07 relative to WM = 1; SNR of WM about
    14-100) in place.

    ``unit`` is one :func:`noise_volume` shared by the four modalities, read unflipped (channel 0) or
    mirrored along x, y or z (channels 1-3): the four noise images are then independent except on the mirror
    planes, at a quarter of the cost of drawing four (drawing is ~0.1 s per modality here).
    """
    mirrored = unit if channel == 0 else np.flip(unit, axis=channel - 1)
    image += mirrored * np.float32(rng.uniform(*sd))
    return image


def gamma(rng: np.random.Generator, means: np.ndarray) -> np.ndarray:
    """Class means raised to a power ``exp(N(0, 0.2))`` (about 0.67-1.5 at 2 sd); WM = 1 stays 1."""
    return np.power(means, np.float32(np.exp(rng.normal(0.0, 0.2)))).astype(np.float32)


def acquire(rng: np.random.Generator, image: np.ndarray, outside: np.ndarray, unit_noise: np.ndarray,
            channel: int, acquisition: Acquisition = Acquisition()) -> np.ndarray:
    """Bias field, blur, noise; then 0 outside the brain and >= FLOOR inside.

    Args:
        image: float32 (bx, by, bz), noise-free image relative to WM (class means already gamma-bent).
        outside: bool (bx, by, bz), voxels outside the brain.
        unit_noise: float32 (bx, by, bz) from :func:`noise_volume`; channel: modality index 0-3.
        acquisition: the ranges to draw from (a domain's; default the adult source domain's).
    """
    image = bias_field(rng, image, acquisition.bias)
    image = add_noise(rng, blur(rng, image, acquisition), unit_noise, channel, acquisition.noise_sd)
    np.maximum(image, np.float32(FLOOR), out=image)
    image[outside] = 0.0
    return image
