"""htcnns.training.synthseg: contrast tables obey MRI physics, artefacts keep the brain mask, and generated cases are
deterministic, on the RAS BraTS grid, with nested tumour labels inside the brain and physics-ordered contrasts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from htcnns.errors import InputError
from htcnns.labels import Label, regions_from_labels
from htcnns.training.synthseg import (
    DOMAINS,
    HELD_OUT,
    SyntheticCase,
    anatomy,
    artefacts,
    contrast,
    generate,
    load_sources,
    tumour,
)
from htcnns.training.synthseg.preview import save_preview

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
MEASURING_CASES = ("brats2023-gli-00001-000", "brats2023-met-00110-000")
needs_data = pytest.mark.skipif(not (DATA / "sri24-brats-space").is_dir(), reason="../shared/data is absent")
T1N, T1C, T2W, T2F = range(4)
CSF, GM, WM, NCR, ED, ET = range(6)


def test_drawn_means_keep_the_physics_orderings():
    rng = np.random.default_rng(0)
    floor = contrast.ED_OVER_GM_FLAIR[0] * 0.9999  # float32 rounding
    for _ in range(500):
        m = contrast.draw_means(rng)
        assert m[T1N, CSF] < m[T1N, GM] < m[T1N, WM] and m[T1N, NCR] < m[T1N, WM] and m[T1N, ED] < m[T1N, WM]
        assert m[T1C, ET] > m[T1C, WM] > m[T1C, CSF] and m[T1C, ET] > m[T1C, GM] and m[T1C, NCR] < m[T1C, WM]
        assert m[T2W, CSF] > m[T2W, GM] > m[T2W, WM] and m[T2W, ED] > m[T2W, WM] and m[T2W, NCR] > m[T2W, WM]
        assert m[T2F, CSF] < m[T2F, WM] < m[T2F, GM] and m[T2F, ED] >= floor * m[T2F, GM]
        assert np.all(m[:, WM] == 1.0)
    subtle = [m for m in (contrast.draw_means(rng) for _ in range(500)) if m[T2F, ED] < 1.3 * m[T2F, GM]]
    assert len(subtle) > 25  # oedema only a little brighter than the cortex on FLAIR: the real cases have it


def test_blend_replaces_anatomy_by_tumour_fractions():
    image = np.full((2, 2, 2), 1.0, np.float32)
    lesion = np.zeros((3, 2, 2, 2), np.float32)
    lesion[2, 0] = 1.0  # ET everywhere in the first x-slice
    lesion[1, 1] = 0.5  # half oedema in the second
    means = np.array([0.3, 0.8, 1.0, 0.5, 2.0, 3.0], np.float32)
    contrast.blend(image, lesion, means, np.ones_like(lesion))
    assert np.allclose(image[0], 3.0) and np.allclose(image[1], 0.5 * 1.0 + 0.5 * 2.0)


def test_acquire_keeps_zero_outside_and_positive_inside():
    rng = np.random.default_rng(1)
    image = np.full((40, 36, 30), 0.2, np.float32)
    outside = np.ones(image.shape, bool)
    outside[5:-5, 5:-5, 5:-5] = False
    for channel in range(4):
        out = artefacts.acquire(rng, image.copy(), outside, artefacts.noise_volume(rng, image.shape), channel)
        assert np.all(out[outside] == 0) and np.all(out[~outside] >= artefacts.FLOOR)


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["x", "y", "z"])
def test_thick_slices_keep_a_linear_ramp(axis: int):
    ramp = np.arange(30, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
    volume = np.broadcast_to(ramp, (30, 30, 30)).copy()
    out = artefacts._resample_slices(volume, axis, thickness=3.0, offset=1.0)
    inner = [slice(None)] * 3
    inner[axis] = slice(1, 29)  # between the first and last kept slice
    assert out.shape == volume.shape and np.allclose(out[tuple(inner)], volume[tuple(inner)], atol=1e-4)


def test_procedural_tumour_has_oedema_around_a_core():
    labels = tumour.procedural_labels(np.random.default_rng(3))
    assert set(np.unique(labels)) <= {0, Label.NCR, Label.ED, Label.ET}
    assert (labels == Label.ED).sum() > (labels == Label.ET).sum() > 0
    soft = tumour.soft_tumour(np.random.default_rng(4), labels, zoom=1.0)
    assert soft.shape[0] == 3 and soft.min() >= 0 and soft.sum(axis=0).max() <= 1.0 + 1e-5


@needs_data
def test_sources_hold_out_a_label_map_and_never_touch_the_measuring_cases():
    train, validation = load_sources(DATA), load_sources(DATA, "validation")
    names = {t.name for t in train.tumours}
    assert len(names) == 5 and not names & set(HELD_OUT)
    assert {t.name for t in validation.tumours} == set(HELD_OUT)
    assert not any(m in name for name in names for m in MEASURING_CASES)
    assert train.atlas is validation.atlas  # loaded once
    assert load_sources(DATA) is train


def test_missing_sources_say_where_to_point(tmp_path: Path):
    with pytest.raises(InputError, match="synthseg sources not found.*--atlas"):
        load_sources(tmp_path)


@pytest.fixture(scope="module")
def cases() -> list[SyntheticCase]:
    if not (DATA / "sri24-brats-space").is_dir():
        pytest.skip("../shared/data is absent")
    sources = load_sources(DATA)
    return [generate(seed, sources) for seed in range(4)]


@needs_data
def test_same_seed_same_arrays_whatever_the_thread_count(cases: list[SyntheticCase]):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = generate(0, load_sources(DATA))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(again.image, cases[0].image) and np.array_equal(again.label, cases[0].label)
    assert np.array_equal(again.tissue, cases[0].tissue)
    assert not np.array_equal(cases[1].image, cases[0].image)


@needs_data
def test_geometry_is_the_ras_brats_grid(cases: list[SyntheticCase]):
    for case in cases:
        assert case.image.shape == (4, 240, 240, 155) and case.image.dtype == np.float32
        assert case.label.shape == case.tissue.shape == (240, 240, 155) and case.label.dtype == np.uint8
        assert nib.aff2axcodes(case.affine) == ("R", "A", "S") and np.allclose(np.diag(case.affine)[:3], 1.0)


@needs_data
def test_brain_mask_is_shared_and_the_tumour_is_inside_it(cases: list[SyntheticCase]):
    for case in cases:
        brain = case.image[0] > 0
        assert all(np.array_equal(brain, channel > 0) for channel in case.image)
        assert np.array_equal(brain, case.tissue > 0) and 1.1e6 < brain.sum() < 1.8e6
        assert np.all(case.image >= 0) and set(np.unique(case.label)) <= {0, 1, 2, 3}
        wt, tc, et = regions_from_labels(case.label)
        assert wt.sum() > 2000 and np.all(wt <= brain) and np.all(et <= tc) and np.all(tc <= wt)
        centre = np.round(np.argwhere(wt).mean(axis=0)).astype(int)
        assert brain[tuple(centre)], case.tumour_source
    assert {Label.NCR, Label.ED, Label.ET} <= set(np.unique(np.concatenate([c.label.ravel() for c in cases])))


@needs_data
def test_contrasts_are_ordered_as_mri_physics_says(cases: list[SyntheticCase]):
    for case in cases:
        wm = case.tissue == 3
        tumour_free = case.label == 0

        def median(channel: int, mask: np.ndarray, image: np.ndarray = case.image) -> float:
            return float(np.median(image[channel][mask]))

        csf = (case.tissue == 1) & tumour_free
        assert median(T2F, case.label == Label.ED) > median(T2F, wm & tumour_free), case.tumour_source
        assert median(T2F, csf) < median(T2F, wm & tumour_free)
        assert median(T2W, csf) > median(T2W, wm & tumour_free)
        assert median(T1N, csf) < median(T1N, wm & tumour_free)
        if (case.label == Label.ET).any():
            assert median(T1C, case.label == Label.ET) > median(T1C, wm & tumour_free)


@needs_data
def test_preview_png_is_written(cases: list[SyntheticCase], tmp_path: Path):
    save_preview(cases[:1], tmp_path / "preview.png", dpi=30)
    assert (tmp_path / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cortical_folds_move_fraction_between_gm_and_csf_only():
    probs = np.zeros((3, 40, 40, 40), np.float32)
    probs[:, :, :, :20] = np.array([0.3, 0.6, 0.1], np.float32).reshape(3, 1, 1, 1)  # cortical ribbon
    probs[0, :, :, 20:30] = 1.0  # a ventricle: CSF without GM
    probs[2, :, :, 30:] = 1.0  # deep white matter
    before = probs.copy()
    anatomy.add_cortical_folds(np.random.default_rng(1), probs, anatomy.csf_nearness(probs))
    np.testing.assert_allclose(probs.sum(axis=0), before.sum(axis=0), atol=1e-6)
    np.testing.assert_array_equal(probs[2], before[2])
    assert np.all(probs >= -1e-6)
    ribbon = probs[0, :, :, 4:16]
    assert ribbon.max() > 0.6 and ribbon.min() < 0.1  # sulci and gyri where the atlas had a uniform mixture
    np.testing.assert_allclose(probs[:, :, :, 24:], before[:, :, :, 24:], atol=1e-6)


def test_skull_strip_removes_outer_csf_beyond_the_margin_but_keeps_ventricles():
    probs = np.zeros((3, 50, 50, 50), np.float32)
    probs[0, 5:45, 5:45, 5:45] = 1.0  # CSF shell 5 voxels thick around the parenchyma
    probs[2, 10:40, 10:40, 10:40] = 1.0
    probs[0, 10:40, 10:40, 10:40] = 0.0
    probs[0, 20:30, 20:30, 20:30], probs[2, 20:30, 20:30, 20:30] = 1.0, 0.0  # a ventricle inside
    for seed in range(6):
        outside = anatomy.skull_strip(np.random.default_rng(seed), probs)
        assert not outside[20:30, 20:30, 20:30].any() and not outside[10:40, 10:40, 10:40].any()
        assert outside[6, 25, 25] and outside[0, 0, 0]  # CSF 4 voxels from the parenchyma: beyond any margin
        kept = 25 - int((~outside[:25, 25, 25]).argmax())  # half-width of the kept brain along x
        assert 15 <= kept <= 18


def test_domains_change_only_what_they_say():
    adult, paediatric = DOMAINS["adult"].ranges(), DOMAINS["paediatric"].ranges()
    np.testing.assert_array_equal(adult, contrast.RANGES)
    changed = np.argwhere(np.any(adult != paediatric, axis=-1))
    assert {(int(r), contrast.CLASSES[c]) for r, c in changed} == {(T1C, "et"), (T1N, "gm")}
    assert DOMAINS["ssa"].acquisition.noise_sd[0] > DOMAINS["adult"].acquisition.noise_sd[1] - 0.02


@needs_data
def test_paediatric_cases_lose_enhancement_and_sit_in_the_posterior_fossa():
    sources = load_sources(DATA)
    centre = sources.atlas.centre
    cases = [generate(seed, sources, DOMAINS["paediatric"]) for seed in range(4)]
    assert any(not (case.label == Label.ET).any() for case in cases)
    low_and_back = [np.argwhere(case.label > 0).mean(axis=0) for case in cases]
    assert sum(c[2] < centre[2] - 15 and c[1] < centre[1] for c in low_and_back) >= 2
    assert all(case.label.any() and not case.label[case.tissue == 0].any() for case in cases)


def test_vessels_are_thin_tubes_near_csf_only():
    probs = np.zeros((3, 60, 60, 60), np.float32)
    probs[0, :, :, :20], probs[1, :, :, :20] = 0.3, 0.7  # cortex with CSF in its sulci
    probs[2, :, :, 20:] = 1.0  # white matter
    fractions = [anatomy.draw_vessels(np.random.default_rng(seed), anatomy.csf_nearness(probs)) for seed in range(4)]
    for vessels in fractions:
        assert vessels.min() >= 0 and vessels.max() <= 1
        assert not vessels[:, :, 30:].any()  # > 3 smoothing sd from any CSF
        assert 0.003 < (vessels[:, :, :15] > 0.5).mean() < 0.15
    image = np.ones((2, 2, 2), np.float32)
    vessels = np.array([0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32).reshape(2, 2, 2)
    contrast.add_vessels(image, vessels, 2.0)
    np.testing.assert_allclose(image.ravel()[:3], [1.0, 2.0, 1.5])
