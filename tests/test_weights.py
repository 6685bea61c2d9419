import json
from pathlib import Path

import pytest

from htcnns.errors import WeightsError
from htcnns.inference.pipeline import load_models
from htcnns.inference.preprocess import LEGACY_NORMALIZATION, NORMALIZATION
from htcnns.networks import PRESETS, build_network
from htcnns.weights import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    Manifest,
    find_model_folders,
    load_model,
    read_manifest,
    save_model,
    sha256_of,
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    network = build_network("unet", PRESETS["unet"]["compact"])
    save_model(network, Manifest("unet", "unet", dict(PRESETS["unet"]["compact"]), (32, 32, 32), ""),
               tmp_path / "unet")
    return tmp_path / "unet"


def test_round_trip_restores_identical_tensors(model_dir: Path):
    manifest = read_manifest(model_dir)
    assert manifest.sha256 == sha256_of(model_dir / WEIGHTS_NAME)
    assert manifest.roi_size == (32, 32, 32)
    loaded = load_model(model_dir)
    fresh = build_network("unet", PRESETS["unet"]["compact"])
    assert not loaded.network.training
    for name, tensor in fresh.state_dict().items():
        assert tensor.shape == loaded.network.state_dict()[name].shape


def test_manifest_records_semantics(model_dir: Path):
    data = json.loads((model_dir / MANIFEST_NAME).read_text())
    assert data["input_modalities"] == ["t1n", "t1c", "t2w", "t2f"]
    assert data["outputs"] == ["WT", "TC", "ET"]
    assert data["labels"] == {"0": "background", "1": "NCR", "2": "ED", "3": "ET"}
    assert data["postprocessing"]["min_et_component_voxels"] == 16


def test_tampered_weights_are_refused(model_dir: Path):
    weights = model_dir / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"sha256 is [0-9a-f]{64} but manifest.json expects"):
        load_model(model_dir)


def test_wrong_architecture_is_refused(model_dir: Path):
    data = json.loads((model_dir / MANIFEST_NAME).read_text())
    data["architecture"] = "transbts"
    data["config"] = dict(PRESETS["transbts"]["compact"])
    (model_dir / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="tensors do not match architecture 'transbts'"):
        load_model(model_dir)


def test_unknown_architecture_and_missing_manifest(model_dir: Path, tmp_path: Path):
    data = json.loads((model_dir / MANIFEST_NAME).read_text())
    data["architecture"] = "resnet"
    (model_dir / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="unknown architecture 'resnet'"):
        load_model(model_dir)
    with pytest.raises(WeightsError, match="cannot read the model manifest"):
        load_model(tmp_path / "nowhere")


def test_weights_file_is_safetensors_not_pickle(model_dir: Path):
    header_length = int.from_bytes((model_dir / WEIGHTS_NAME).read_bytes()[:8], "little")
    header = json.loads((model_dir / WEIGHTS_NAME).read_bytes()[8:8 + header_length])
    assert all("dtype" in v for k, v in header.items() if k != "__metadata__")


def test_models_root_that_is_not_a_folder_is_named(tmp_path: Path):
    with pytest.raises(WeightsError, match="not a folder of model folders"):
        find_model_folders(tmp_path / "missing")
    with pytest.raises(WeightsError, match=r"no model folders \(\*/manifest.json\) found"):
        find_model_folders(tmp_path)


def test_model_of_an_older_normalisation_is_refused_for_segmenting_but_loads_for_fine_tuning(model_dir: Path):
    data = json.loads((model_dir / MANIFEST_NAME).read_text())
    assert data["normalization"] == NORMALIZATION
    del data["normalization"]  # a manifest written before the field: z-score over the whole brain
    (model_dir / MANIFEST_NAME).write_text(json.dumps(data))
    assert load_model(model_dir).manifest.normalization == LEGACY_NORMALIZATION  # --init-from still takes it
    with pytest.raises(WeightsError, match="normalised as 'zscore-brain'.*fine-tune it with `htcnns train"):
        load_models(model_dir.parent, "cpu")
