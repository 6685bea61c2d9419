"""Tests for the synthetic BraTS-like phantom generator."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from htcnns.training import phantoms as synth

SMALL = (64, 64, 48)
MEDIUM = (96, 96, 64)
CSF, GM, WM, ED, NCR, ET = (synth.TISSUES.index(name) for name in ("csf", "gm", "wm", "ed", "ncr", "et"))


@pytest.fixture(scope="module")
def full() -> tuple[synth.Phantom, np.ndarray]:
    return synth.make_phantom_with_tissues(0)


def _seed_of(variant: str) -> int:
    return next(seed for seed in range(200) if synth.tumour_variant(seed) == variant)


def _region_mean(phantom: synth.Phantom, tissue: np.ndarray, channel: str, code: int) -> float:
    return float(phantom.image[synth.MODALITIES.index(channel)][tissue == code].mean())


def test_shapes_dtypes_and_affine(full: tuple[synth.Phantom, np.ndarray]) -> None:
    phantom, _ = full
    assert phantom.image.shape == (4, *synth.BRATS_SHAPE) and phantom.image.dtype == np.float32
    assert phantom.label.shape == synth.BRATS_SHAPE and phantom.label.dtype == np.uint8
    expected = np.array([[-1, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    assert phantom.affine.dtype == np.float64 and np.array_equal(phantom.affine, expected)
    small = synth.make_phantom(1, shape=SMALL)
    assert small.image.shape == (4, *SMALL) and small.label.shape == SMALL
    assert small.affine[1, 3] == SMALL[1] - 1


def test_full_size_brain_is_brain_sized(full: tuple[synth.Phantom, np.ndarray]) -> None:
    _, tissue = full
    assert 1.2e6 < np.count_nonzero(tissue) < 2.3e6  # a skull-stripped adult brain is ~1.2-1.9 L
    assert not tissue[0].any() and not tissue[-1].any()


def test_deterministic_under_seed() -> None:
    a, b = synth.make_phantom(7, shape=SMALL), synth.make_phantom(7, shape=SMALL)
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    c = synth.make_phantom(8, shape=SMALL)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.label, c.label)


@pytest.mark.parametrize("seed", range(8))
def test_labels_valid_present_and_inside_brain(seed: int) -> None:
    phantom, tissue = synth.make_phantom_with_tissues(seed, shape=SMALL)
    assert set(np.unique(phantom.label).tolist()) <= {0, 1, 2, 3}
    assert np.count_nonzero(phantom.label) > 0  # WT
    assert np.count_nonzero(np.isin(phantom.label, (1, 3))) > 0  # TC
    assert (phantom.image[:, phantom.label > 0] > 0).all()
    assert (phantom.image[:, tissue > 0] > 0).all() and (phantom.image[:, tissue == 0] == 0).all()
    assert np.array_equal(phantom.label > 0, tissue >= ED)


def test_tumour_in_one_hemisphere(full: tuple[synth.Phantom, np.ndarray]) -> None:
    phantom, tissue = full
    brain_x = np.flatnonzero(tissue.any(axis=(1, 2)))
    midline = (brain_x[0] + brain_x[-1]) / 2
    tumour_x = np.flatnonzero(phantom.label.any(axis=(1, 2)))
    assert tumour_x[-1] < midline + 4 or tumour_x[0] > midline - 4


def test_variant_frequencies() -> None:
    variants = [synth.tumour_variant(seed) for seed in range(1000)]
    assert 0.10 < variants.count("solid") / 1000 < 0.20
    assert 0.06 < variants.count("non_enhancing") / 1000 < 0.14


@pytest.mark.parametrize("variant", synth.VARIANTS)
def test_variant_subregions(variant: str) -> None:
    counts = np.bincount(synth.make_phantom(_seed_of(variant), shape=MEDIUM).label.ravel(), minlength=4)
    ncr, ed, et = counts[1:]
    assert ed > 0
    if variant == "classic":
        assert ncr > 0 and et > 0
    elif variant == "solid":
        assert ncr == 0 and et > 0
    else:
        assert ncr > et


def _check_contrasts(phantom: synth.Phantom, tissue: np.ndarray) -> None:
    assert _region_mean(phantom, tissue, "t2f", ED) > _region_mean(phantom, tissue, "t2f", WM)
    assert _region_mean(phantom, tissue, "t2f", ED) > _region_mean(phantom, tissue, "t2f", CSF)
    assert _region_mean(phantom, tissue, "t2w", CSF) > _region_mean(phantom, tissue, "t2w", WM)
    assert _region_mean(phantom, tissue, "t1n", WM) > _region_mean(phantom, tissue, "t1n", GM)
    assert _region_mean(phantom, tissue, "t1n", GM) > _region_mean(phantom, tissue, "t1n", CSF)
    et = _region_mean(phantom, tissue, "t1c", ET)
    for code in (CSF, GM, WM, ED, NCR):
        if (tissue == code).any():
            assert et > _region_mean(phantom, tissue, "t1c", code)


def test_contrasts_full_size(full: tuple[synth.Phantom, np.ndarray]) -> None:
    _check_contrasts(*full)


@pytest.mark.parametrize("seed", [_seed_of(variant) for variant in ("classic", "solid")] + [2, 5])
def test_contrasts_small(seed: int) -> None:
    _check_contrasts(*synth.make_phantom_with_tissues(seed, shape=SMALL))


def test_write_phantom_case(tmp_path: Path) -> None:
    phantom = synth.make_phantom(3, shape=SMALL)
    case_dir, truth = tmp_path / "cases" / "BraTS-GLI-99999-000", tmp_path / "truth" / "seg.nii.gz"
    synth.write_phantom_case(phantom, case_dir, "BraTS-GLI-99999-000", truth_path=truth)
    brain = phantom.image[0] > 0
    for modality in synth.MODALITIES:
        img = nib.load(case_dir / f"BraTS-GLI-99999-000-{modality}.nii.gz")
        data = np.asarray(img.dataobj)
        assert data.shape == SMALL and data.dtype == np.int16 and img.get_data_dtype() == np.int16
        assert np.array_equal(img.affine, phantom.affine)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        assert np.array_equal(img.get_qform(), phantom.affine)
        assert np.array_equal(img.get_sform(), phantom.affine)
        assert (data[brain] > 0).all() and (data[~brain] == 0).all() and 1000 < data.max() < 6000
    seg = nib.load(truth)
    truth_data = np.asarray(seg.dataobj)
    assert truth_data.dtype == np.uint8 and np.array_equal(truth_data, phantom.label)
    assert np.array_equal(seg.affine, phantom.affine)


def test_write_without_truth(tmp_path: Path) -> None:
    synth.write_phantom_case(synth.make_phantom(4, shape=SMALL), tmp_path / "c", "X")
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == [f"X-{m}.nii.gz" for m in sorted(synth.MODALITIES)]
