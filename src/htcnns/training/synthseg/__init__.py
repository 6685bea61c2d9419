"""SynthSeg-style synthetic BraTS cases: real anatomy and tumour shapes, random but physically ordered contrasts.

``generate(seed, sources)`` draws one case on the BraTS grid (240x240x155, 1 mm, RAS+):

1. anatomy: the SRI24 CSF/GM/WM probability maps through a random affine + elastic warp, with random cortical
   folds, vessels and a random skull-stripping margin (``anatomy``);
2. tumour: a real expert label map (DeepMedic BraTS 2015, one held out) or a procedural glioma, flipped,
   rotated, scaled, elastically deformed, placed in white matter, pushing the anatomy aside (``tumour``);
3. contrast: per-class, per-modality means from physics-ordered ranges, partial-volume mixing (``contrast``);
4. acquisition: bias field, blur / thick slices, noise, gamma; 0 outside the brain (``artefacts``).

Sources are loaded once per folder and cached (``load_sources``). The same seed gives identical arrays.
Generator v2 (``htcnns.training.synthseg.v2.generate_v2``) puts the same tumours into 20 real SynthSeg anatomies with
per-structure contrasts instead of the one SRI24 average brain.
Licences of what the cases derive from: SRI24 atlas CC BY-SA 3.0; DeepMedic BraTS 2015 subset CC BY-NC-SA 3.0
(non-commercial). See docs/synthseg.md.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from htcnns.errors import InputError
from htcnns.labels import MODALITIES
from htcnns.training.phantoms import _smooth_field
from htcnns.training.synthseg import anatomy, artefacts, contrast, tumour
from htcnns.training.synthseg.anatomy import BRATS_SHAPE, Atlas, load_atlas
from htcnns.training.synthseg.domains import ADULT, DOMAINS, Domain
from htcnns.training.synthseg.tumour import DEEPMEDIC_DIR, HELD_OUT, TumourSource, load_tumour_sources

__all__ = ["DOMAINS", "HELD_OUT", "SPLITS", "Domain", "Sources", "SyntheticCase", "default_data_root", "generate",
           "load_sources"]

ATLAS_DIR = "sri24-brats-space"
PROCEDURAL_FRACTION = 0.35
"""Share of cases whose tumour is procedural rather than a real label map."""
ORIGINAL_SITE_FRACTION = 0.3
"""Share of real tumours kept near the site where they were drawn (the rest go to a random WM voxel)."""


@dataclass(frozen=True)
class Sources:
    """What the generator draws from: the atlas and the real tumour label maps (held-out ones excluded)."""

    atlas: Atlas
    tumours: tuple[TumourSource, ...]


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case.

    image: float32 (4, 240, 240, 155), channels MODALITIES (t1n, t1c, t2w, t2f), RAS+ voxel order, intensities
        relative to white matter (about 1), 0 outside the brain and > 0 inside.
    label: uint8 (240, 240, 155), 0 background, 1 NCR, 2 ED, 3 ET.
    tissue: uint8 (240, 240, 155), the deformed healthy anatomy (also under the tumour): 0 outside the brain,
        1 CSF, 2 GM, 3 WM (the largest fraction).
    affine: float64 (4, 4), voxel-to-world (RAS+, mm) of the SRI24/BraTS grid.
    tumour_source: the real label map the tumour came from, or "procedural".
    anatomy: the healthy brain: "sri24" (v1) or a SynthSeg label map (``v2.generate_v2``).
    """

    image: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray
    tumour_source: str
    anatomy: str = "sri24"


def default_data_root() -> Path:
    """``$HTCNNS_SHARED_DATA`` if set, else ``../shared/data`` next to this checkout."""
    env = os.environ.get("HTCNNS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[5] / "shared" / "data"


SPLITS = ("train", "validation")


@functools.lru_cache(maxsize=2)
def _atlas(folder: Path) -> Atlas:
    return load_atlas(folder)


@functools.lru_cache(maxsize=4)
def load_sources(root: Path, split: str = "train") -> Sources:
    """Load (once per ``root`` and ``split``) the SRI24 atlas and DeepMedic label maps of ``root`` (shared/data).

    ``split`` "train" takes every DeepMedic label map but the held-out ones (:data:`HELD_OUT`); "validation"
    takes only those, to check what networks trained on the others do on tumour shapes they never saw.

    Raises:
        InputError: if ``root`` lacks ``sri24-brats-space/`` or the DeepMedic label maps.
        ValueError: for an unknown ``split``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    if not (root / ATLAS_DIR).is_dir():
        raise InputError(f"synthseg sources not found: {root / ATLAS_DIR} does not exist; pass --atlas with the "
                         "shared data folder (holding sri24-brats-space/ and deepmedic-brats2015/) or set "
                         "HTCNNS_SHARED_DATA")
    names = tuple(p.parent.name for p in (root / DEEPMEDIC_DIR).glob("*/*/OTMultiClass.nii.gz"))
    excluded = HELD_OUT if split == "train" else tuple(n for n in names if n not in HELD_OUT)
    return Sources(_atlas(root / ATLAS_DIR), load_tumour_sources(root / DEEPMEDIC_DIR, excluded))


def _draw_tumour(rng: np.random.Generator, sources: Sources,
                 domain: Domain) -> tuple[str, np.ndarray, float, np.ndarray]:
    """(source name, uint8 label box, zoom, atlas voxel of its centre) of this case's tumour."""
    fossa = domain.posterior_fossa > 0 and rng.random() < domain.posterior_fossa
    sites = sources.atlas.fossa_voxels if fossa else sources.atlas.wm_voxels
    site = sites[rng.integers(len(sites))].astype(float)
    if rng.random() < PROCEDURAL_FRACTION or not sources.tumours:
        return "procedural", tumour.procedural_labels(rng), 1.0, site
    source = sources.tumours[rng.integers(len(sources.tumours))]
    if not fossa and rng.random() < ORIGINAL_SITE_FRACTION:
        site = source.centre + rng.uniform(-5, 5, 3)
    return source.name, source.labels, float(rng.uniform(*domain.tumour_zoom)), site


def _drop_enhancement(rng: np.random.Generator, soft: np.ndarray, domain: Domain) -> None:
    """With probability 1 - ``domain.enhancing_share``, make the enhancing part non-enhancing core, in place."""
    if domain.enhancing_share < 1 and rng.random() >= domain.enhancing_share:
        soft[0] += soft[2]
        soft[2] = 0.0


@dataclass(frozen=True)
class Scene:
    """One case's output box before contrast: where it reads the anatomy, its tumour and vessels.

    box: the output box (full-grid slices); grid: its atlas sampling grid, mass effect included;
    probs: float32 (3, bx, by, bz) CSF/GM/WM fractions; outside: bool (bx, by, bz), voxels outside the brain;
    vessels: float32 (bx, by, bz) blood fraction; inner, lesion: from :func:`tumour.place`; name: tumour source.
    """

    box: tuple[slice, ...]
    grid: torch.Tensor
    probs: np.ndarray
    outside: np.ndarray
    vessels: np.ndarray
    inner: tuple[slice, ...]
    lesion: np.ndarray
    name: str


@dataclass(frozen=True)
class Paint:
    """Per-case contrast draws shared by the modalities: class means (4, 6), tumour heterogeneity (4, 3), blood
    means (4,) and one unit noise volume (bx, by, bz)."""

    means: np.ndarray
    heterogeneity: np.ndarray
    blood: np.ndarray
    unit_noise: np.ndarray


def draw_paint(rng: np.random.Generator, shape: tuple[int, ...], domain: Domain) -> Paint:
    """The contrast draws of one case whose output box has ``shape``."""
    means = contrast.draw_means(rng, domain.ranges())
    heterogeneity = contrast.draw_texture(rng)
    blood = rng.uniform(contrast.VESSEL_RANGES[:, 0], contrast.VESSEL_RANGES[:, 1])
    return Paint(means, heterogeneity, blood, artefacts.noise_volume(rng, shape))


def finish_channel(rng: np.random.Generator, image: np.ndarray, means: np.ndarray, channel: int, scene: Scene,
                   paint: Paint, domain: Domain) -> np.ndarray:
    """Vessels, tumour and acquisition over the healthy ``image`` (bx, by, bz) of modality ``channel``, whose
    gamma-bent class means (6,) are ``means``; modifies ``image`` and returns the acquired one."""
    contrast.add_vessels(image, scene.vessels, paint.blood[channel])
    if scene.lesion.size:
        field = _smooth_field(rng, scene.lesion.shape[1:], 3.0)
        texture = 1.0 + paint.heterogeneity[channel].reshape(3, 1, 1, 1) * field
        contrast.blend(image[scene.inner], scene.lesion, means, texture)
    image[scene.outside] = means[0]  # blur the brain edge against CSF, not against 0
    return artefacts.acquire(rng, image, scene.outside, paint.unit_noise, channel, domain.acquisition)


def _render(rng: np.random.Generator, scene: Scene, domain: Domain) -> np.ndarray:
    """Four modalities of the output box, float32 (4, bx, by, bz), from tissue, vessel and tumour fractions."""
    paint = draw_paint(rng, scene.outside.shape, domain)
    images = np.empty((len(MODALITIES), *scene.probs.shape[1:]), np.float32)
    for channel in range(len(MODALITIES)):
        paint.means[channel] = artefacts.gamma(rng, paint.means[channel])
        image = contrast.mix(scene.probs, paint.means[channel])
        images[channel] = finish_channel(rng, image, paint.means[channel], channel, scene, paint, domain)
    return images


def _labels(probs: np.ndarray, outside: np.ndarray, inner: tuple[slice, ...],
            lesion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 maps of the output box: tumour labels (arg-max of rest, NCR, ED, ET fractions) and tissues
    (1 + arg-max of CSF, GM, WM), both 0 outside the brain."""
    labels = np.zeros(probs.shape[1:], np.uint8)
    if lesion.size:
        rest = 1.0 - lesion.sum(axis=0, keepdims=True)
        labels[inner] = np.argmax(np.concatenate([rest, lesion]), axis=0).astype(np.uint8)
    tissue = np.argmax(probs, axis=0).astype(np.uint8) + 1
    labels[outside] = 0
    tissue[outside] = 0
    return labels, tissue


def draw_layout(rng: np.random.Generator, sources: Sources,
                domain: Domain) -> tuple[tuple[slice, ...], torch.Tensor, np.ndarray, np.ndarray, str]:
    """(output box, its atlas sampling grid with the mass effect, tumour memberships (3, ...), tumour centre in
    full-grid output voxels, tumour source name) of one case: the random warp of ``sources.atlas`` and the tumour."""
    atlas = sources.atlas
    warp = anatomy.draw_warp(rng, atlas)
    box = anatomy.output_box(warp, atlas)
    name, source_labels, zoom, site = _draw_tumour(rng, sources, domain)
    soft = tumour.soft_tumour(rng, source_labels, zoom)
    _drop_enhancement(rng, soft, domain)
    centre = warp.to_output(site[None])[0]
    grid = anatomy.sampling_grid(rng, warp, atlas, box)
    radius = float(np.cbrt(3.0 * (soft[0].sum() + soft[2].sum()) / (4.0 * np.pi)))  # of the core, voxels
    anatomy.add_mass_effect(grid, box, warp, atlas, (centre, radius, float(rng.uniform(0.0, 0.5)) * radius))
    return box, grid, soft, centre, name


def draw_scene(rng: np.random.Generator, sources: Sources, domain: Domain, folds: bool = True) -> Scene:
    """The deformed anatomy, skull stripping, vessels and placed tumour of one case; ``folds`` adds random
    cortical folds (for the smooth SRI24 average, not for real anatomies)."""
    box, grid, soft, centre, name = draw_layout(rng, sources, domain)
    probs = anatomy.deform(sources.atlas, grid)
    near_csf = anatomy.csf_nearness(probs)
    if folds:
        anatomy.add_cortical_folds(rng, probs, near_csf)
    outside = anatomy.skull_strip(rng, probs)
    vessels = anatomy.draw_vessels(rng, near_csf)
    inner, lesion = tumour.place(soft, centre, probs, box)
    return Scene(box, grid, probs, outside, vessels, inner, lesion, name)


def assemble(scene: Scene, images: np.ndarray, affine: np.ndarray) -> SyntheticCase:
    """The full-grid :class:`SyntheticCase` of ``scene`` and its rendered box ``images`` (4, bx, by, bz)."""
    image = np.zeros((len(MODALITIES), *BRATS_SHAPE), np.float32)
    image[(slice(None), *scene.box)] = images
    label, tissue = np.zeros(BRATS_SHAPE, np.uint8), np.zeros(BRATS_SHAPE, np.uint8)
    label[scene.box], tissue[scene.box] = _labels(scene.probs, scene.outside, scene.inner, scene.lesion)
    return SyntheticCase(image, label, tissue, affine.copy(), scene.name)


def generate(seed: int, sources: Sources, domain: Domain = ADULT) -> SyntheticCase:
    """Generate one synthetic case; deterministic: the same seed, sources and domain give identical arrays.

    Args:
        seed: random seed (any non-negative integer).
        sources: from :func:`load_sources`.
        domain: the population to imitate (:data:`DOMAINS`); the default is the adult-glioma source domain.

    Returns:
        A :class:`SyntheticCase` on the full BraTS grid.
    """
    rng = np.random.default_rng(seed)
    scene = draw_scene(rng, sources, domain)
    return assemble(scene, _render(rng, scene, domain), sources.atlas.affine)
