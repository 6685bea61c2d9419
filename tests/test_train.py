"""htcnns train on tiny phantoms: it learns (loss falls), exports a verifiable model, records provenance."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from htcnns.errors import WeightsError
from htcnns.train import Sample, TrainConfig, random_patch, train
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
