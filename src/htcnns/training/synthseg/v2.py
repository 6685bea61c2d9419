"""Generator v2: the healthy brain of each case is one of 20 real SynthSeg anatomies, every structure with its own
random contrast; tumours, mass effect, vessels, skull stripping and acquisition are generator v1's.

``generate_v2(seed, sources, domain)`` draws one case on the BraTS grid:

1. anatomy: one registered SynthSeg label map (``anatomies``), through v1's random affine + elastic warp and
   mass effect; CSF/GM/WM fractions (its one-hot tissues resampled trilinearly) feed v1's skull stripping
   (which here always keeps the ventricles), vessels and tumour placement; the structure classes are resampled
   by nearest neighbour;
2. tumour: a real label map (DeepMedic BraTS 2015 or BraTS 2020/2023 ``brats-tumour-label-maps``, some held out)
   or a procedural glioma, as in v1;
3. contrast: v1's CSF/GM/WM and tumour means per modality, then each structure's mean between its tissue's and
   a neighbouring tissue's (:data:`anatomies.STRUCTURES`); per-class sd (white texture), partial-volume blur;
4. acquisition: v1's gamma (shared by all classes), bias field, blur / thick slices, noise; 0 outside the brain.

No cortical folds are added: the anatomies have real sulci. The same seed gives identical arrays.
"""

from __future__ import annotations

import argparse
import functools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from htcnns.errors import InputError
from htcnns.labels import MODALITIES, Label
from htcnns.training.synthseg import (
    SPLITS,
    Scene,
    Sources,
    SyntheticCase,
    artefacts,
    assemble,
    default_data_root,
    draw_paint,
    draw_scene,
    finish_channel,
    load_sources,
)
from htcnns.training.synthseg.anatomies import (
    HELD_OUT_ANATOMIES,
    STRUCTURES,
    VENTRICLES,
    Anatomy,
    class_index,
    label_map_paths,
    load_anatomy,
)
from htcnns.training.synthseg.domains import ADULT, Domain
from htcnns.training.synthseg.tumour import TumourSource, load_label_map

BRATS_MAPS_DIR = "brats-tumour-label-maps"
BRATS_HELD_OUT = ("BraTS20_Training_014", "BraTS20_Training_015")
"""BraTS label maps that only validation cases use (with v1's :data:`HELD_OUT` DeepMedic map)."""
BRATS_TO_2023 = np.array([0, Label.NCR, Label.ED, Label.ET, Label.ET], dtype=np.uint8)
"""Label value (BraTS 2020: 4 ET; BraTS 2023: 3 ET) -> BraTS 2023 label."""
MEASURING_CASES = re.compile(r"gli-0*1(?!\d)|met-0*110(?!\d)|brats2021_0*1(?!\d)", re.IGNORECASE)
"""Names of the measuring cases (BraTS GLI-00001, alias BraTS2021_00001, and METS-00110): never read."""
STRUCTURE_SD = (0.03, 0.15)
"""Range of each class's relative intensity sd (white texture, before the partial-volume blur)."""
PARTIAL_VOLUME_SIGMA = (0.5, 1.0)
"""Range of the Gaussian blur (voxels) that gives structure borders partial-volume values."""


def is_measuring_case(name: str) -> bool:
    """Whether ``name`` (a file or case name) is one of the measuring cases, or another scan of their patients."""
    return MEASURING_CASES.search(name) is not None


@dataclass(frozen=True)
class SourcesV2:
    """What v2 draws from: registered anatomies and real tumour label maps of one split."""

    anatomies: tuple[Anatomy, ...]
    tumours: tuple[TumourSource, ...]


def _map_name(path: Path) -> str:
    return re.sub(r"[-_]seg\.nii(\.gz)?$", "", path.name)


def load_brats_label_maps(folder: Path, split: str = "train") -> tuple[TumourSource, ...]:
    """The BraTS tumour label maps of ``folder`` (``brats-tumour-label-maps``) in ``split``: "train" all but
    :data:`BRATS_HELD_OUT`, "validation" only those; measuring cases are never loaded.

    Raises:
        InputError: if ``folder`` holds no label map.
    """
    paths = sorted(p for p in Path(folder).glob("*seg.nii*") if not is_measuring_case(p.name))
    if not paths:
        raise InputError(f"no BraTS tumour label maps under {folder} (*seg.nii.gz); pass the shared data folder "
                         "with --atlas (or set HTCNNS_SHARED_DATA)")
    chosen = [p for p in paths if (_map_name(p) in BRATS_HELD_OUT) == (split == "validation")]
    return tuple(load_label_map(p, _map_name(p), BRATS_TO_2023) for p in chosen)


def _anatomy_paths(root: Path, split: str, names: tuple[str, ...]) -> list[Path]:
    """The label maps of ``split`` ("validation": :data:`HELD_OUT_ANATOMIES`), restricted to ``names`` if given."""
    paths = [p for p in label_map_paths(root) if (p.name.split(".")[0] in HELD_OUT_ANATOMIES) == (split != "train")]
    if names:
        unknown = set(names) - {p.name.split(".")[0] for p in paths}
        if unknown:
            raise ValueError(f"anatomies {sorted(unknown)} are not in the {split} split")
        paths = [p for p in paths if p.name.split(".")[0] in names]
    return paths


@functools.lru_cache(maxsize=4)
def load_sources_v2(root: Path, split: str = "train", cache: Path | None = None, names: tuple[str, ...] = (),
                    threads: int = 1) -> SourcesV2:
    """Load (once per arguments) the anatomies and tumour label maps of ``root`` (shared/data) for ``split``.

    "train" takes all but the held-out anatomies and tumour maps; "validation" only those. ``names`` limits the
    anatomies (e.g. ``("training_seg_01",)``); ``cache`` is the registration cache folder (default
    ``anatomies.cache_dir()``); the first use of an anatomy registers it (seconds, ``threads`` threads).

    Raises:
        InputError: if a source folder is missing.
        ValueError: for an unknown ``split`` or a name outside it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    deepmedic = load_sources(root, split).tumours
    tumours = deepmedic + load_brats_label_maps(root / BRATS_MAPS_DIR, split)
    found = tuple(load_anatomy(path, root, cache, threads) for path in _anatomy_paths(root, split, names))
    return SourcesV2(found, tuple(t for t in tumours if not is_measuring_case(t.name)))


def draw_structure_means(rng: np.random.Generator, tissue: np.ndarray) -> np.ndarray:
    """Mean of every structure class, float32 (4, 1 + len(STRUCTURES)), from the case's CSF/GM/WM means ``tissue``
    (4, 3): column 0 (outside the anatomy) is CSF; t1c shares t1n's position between the two tissues."""
    low = np.array([[s.weight[r][0] for s in STRUCTURES] for r in range(3)])
    high = np.array([[s.weight[r][1] for s in STRUCTURES] for r in range(3)])
    weight = rng.uniform(low, high)[[0, 0, 1, 2]]
    own = tissue[:, [s.tissue - 1 for s in STRUCTURES]]
    towards = tissue[:, [s.towards - 1 for s in STRUCTURES]]
    means = np.maximum(own + weight * (towards - own), 0.02)
    return np.concatenate([tissue[:, :1], means], axis=1).astype(np.float32)


def healthy_image(classes: np.ndarray, means: np.ndarray, spread: np.ndarray, noise: np.ndarray,
                  sigma: float) -> np.ndarray:
    """Noise-free healthy image of one modality, float32 like ``classes`` (uint8 structure classes): each class's
    mean (``means``, (1 + K,)) times (1 + its relative sd ``spread`` x ``noise``), blurred by ``sigma`` voxels."""
    image = means[classes] * (1.0 + spread[classes] * noise)
    return ndimage.gaussian_filter(image, sigma, truncate=2.5) if sigma > 0 else image


def _render_v2(rng: np.random.Generator, scene: Scene, classes: np.ndarray, domain: Domain) -> np.ndarray:
    """Four modalities of the output box, float32 (4, bx, by, bz), from structure classes, vessels and tumour."""
    paint = draw_paint(rng, scene.outside.shape, domain)
    structure = draw_structure_means(rng, paint.means[:, :3])
    spread = rng.uniform(*STRUCTURE_SD, structure.shape).astype(np.float32)
    spread[:, 0] = 0.0
    texture = artefacts.noise_volume(rng, classes.shape)
    sigma = float(rng.uniform(*PARTIAL_VOLUME_SIGMA))
    images = np.empty((len(MODALITIES), *classes.shape), np.float32)
    for channel in range(len(MODALITIES)):
        bent = artefacts.gamma(rng, np.concatenate([paint.means[channel], structure[channel]]))
        paint.means[channel] = bent[: paint.means.shape[1]]
        noise = texture if channel == 0 else np.flip(texture, axis=channel - 1)
        image = healthy_image(classes, bent[paint.means.shape[1]:], spread[channel], noise, sigma)
        images[channel] = finish_channel(rng, image, paint.means[channel], channel, scene, paint, domain)
    return images


def generate_v2(seed: int, sources: SourcesV2, domain: Domain = ADULT) -> SyntheticCase:
    """Generate one v2 case; deterministic: the same seed, sources and domain give identical arrays.

    Args:
        seed: random seed (any non-negative integer).
        sources: from :func:`load_sources_v2`.
        domain: the population to imitate (``DOMAINS``).

    Returns:
        A :class:`SyntheticCase` on the full BraTS grid; ``tissue`` maps the structures to 1 CSF, 2 GM, 3 WM.
    """
    rng = np.random.default_rng(seed)
    anatomy = sources.anatomies[int(rng.integers(len(sources.anatomies)))]
    atlas = anatomy.atlas()
    scene = draw_scene(rng, Sources(atlas, sources.tumours), domain, folds=False)
    classes = anatomy.deform_classes(scene.grid)
    scene = replace(scene, outside=scene.outside & ~np.isin(classes, class_index(VENTRICLES)))
    case = assemble(scene, _render_v2(rng, scene, classes, domain), atlas.affine)
    return SyntheticCase(case.image, case.label, case.tissue, case.affine, case.tumour_source, anatomy.name)


def main(argv: Sequence[str] | None = None) -> int:
    """Time the loading of the v2 sources and the generation of ``--cases`` cases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default: ../shared/data)")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    sources = load_sources_v2(args.data or default_data_root(), threads=args.threads)
    print(f"load_sources_v2: {time.perf_counter() - start:.1f} s ({len(sources.anatomies)} anatomies, "
          f"{len(sources.tumours)} tumour maps)", flush=True)
    seconds = []
    for seed in range(args.cases):
        start = time.perf_counter()
        case = generate_v2(seed, sources)
        seconds.append(time.perf_counter() - start)
        print(f"seed {seed}: {seconds[-1]:.2f} s ({case.anatomy}, {case.tumour_source})", flush=True)
    print(f"generate_v2: median {np.median(seconds):.2f} s [{min(seconds):.2f}, {max(seconds):.2f}], "
          f"{args.threads} torch thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
