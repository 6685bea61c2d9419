"""htcnns train on tiny phantoms: it learns (loss falls), exports a verifiable model, records provenance."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from htcnns.errors import InputError, WeightsError
from htcnns.networks import build_network
from htcnns.train import (
    Sample,
    TrainConfig,
    _data_paragraph,
    case_maker,
    data_description,
    fit,
    make_samples,
    network_config,
    random_patch,
    to_sample,
    train,
)
from htcnns.weights import load_model


def test_training_exports_a_loadable_model_with_provenance(tmp_path: Path):
    config = TrainConfig(architecture="unet", output=str(tmp_path / "unet"), steps=4, phantoms=2,
                         validation_phantoms=1, patch_size=32, roi_size=32, phantom_shape=(64, 64, 48))
    manifest = train(config)
    loaded = load_model(tmp_path / "unet")
    assert loaded.manifest.sha256 == manifest.sha256 and loaded.manifest.roi_size == (32, 32, 32)
    provenance = json.loads((tmp_path / "unet" / "manifest.json").read_text())["provenance"]
    assert provenance["steps"] == 4 and provenance["seed"] == 0
    assert set(provenance["synthetic_validation_dice"]) == {"WT", "TC", "ET"}
    card = (tmp_path / "unet" / "MODEL_CARD.md").read_text()
    assert "synthetic phantoms only" in card.lower() and manifest.sha256 in card

    continued = train(replace(config, output=str(tmp_path / "continued"), init_from=str(tmp_path / "unet"),
                              steps=1, phantoms=1, seed=1))
    assert continued.provenance["initialised_from"]["sha256"] == manifest.sha256
    assert manifest.sha256[:12] in (tmp_path / "continued" / "MODEL_CARD.md").read_text()
    with pytest.raises(WeightsError, match="cannot initialise from it"):
        train(replace(config, architecture="axial_unet", init_from=str(tmp_path / "unet")))


def test_random_patch_shapes_and_tumour_bias():
    image = np.zeros((4, 40, 40, 40), np.float32)
    regions = np.zeros((3, 40, 40, 40), np.float32)
    regions[:, 30:34, 30:34, 30:34] = 1
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(30):
        patch, target = random_patch(Sample(image, regions), 16, rng)
        assert patch.shape == (4, 16, 16, 16) and target.shape == (3, 16, 16, 16)
        hits += target.any()
    assert hits >= 15  # two in three patches are centred on tumour


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "sri24-brats-space").is_dir(), reason="../shared/data is absent")
def test_synthseg_cases_feed_training_and_refresh(tmp_path: Path):
    config = TrainConfig(architecture="unet", output=str(tmp_path / "unet"), steps=3, phantoms=1, patch_size=32,
                         data="synthseg", atlas=str(SHARED_DATA), refresh_every=2)
    make_case = case_maker(config)
    samples = make_samples(range(1), make_case)
    assert samples[0].image.shape[0] == 4 and samples[0].regions[0].any()
    renewed = []
    network = build_network("unet", network_config(config))
    losses = fit(network, samples, config, lambda k: renewed.append(k) or to_sample(make_case(10 + k)))
    assert len(losses) == 3 and np.isfinite(losses).all() and renewed == [0]
    described = data_description(config, 0, 1)
    assert "CC BY-NC-SA 3.0" in described and "CC BY-SA 3.0" in described and "held out" in described
    assert "non-commercial" in _data_paragraph(described)


def test_synthseg_without_the_atlas_fails_before_training(tmp_path: Path):
    config = TrainConfig(architecture="unet", output=str(tmp_path / "unet"), data="synthseg",
                         atlas=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="synthseg sources not found"):
        train(config)
    assert not (tmp_path / "unet").exists()
