"""htcnns export: one run, the best of several, or the folds kept as an ensemble that segment loads."""

import json
from pathlib import Path

import pytest
import torch

from htcnns.cli import main
from htcnns.errors import SettingsError, WeightsError
from htcnns.inference.pipeline import load_models
from htcnns.inference.postprocess import PostprocessParams
from htcnns.networks import PRESETS, build_network
from htcnns.networks.ensemble import EnsembleNetwork
from htcnns.training.export import export
from htcnns.weights import MANIFEST_NAME, EnsembleMember, Manifest, ensemble_sha256, load_model, save_model

CONFIG = dict(PRESETS["unet"]["compact"])


def fold_run(folder: Path, fold: int, dice: float, et_threshold: float) -> Path:
    """A finished fold run as htcnns train leaves it (random weights, the provenance fields export reads)."""
    torch.manual_seed(fold)
    provenance = {"fold": {"folds": 3, "fold": fold}, "synthetic_validation_dice": {"WT": dice, "TC": dice, "ET": dice},
                  "data": "synthetic phantoms"}
    save_model(build_network("unet", CONFIG), Manifest("run", "unet", CONFIG, (32, 32, 32), "",
                                                       PostprocessParams(et_threshold=et_threshold),
                                                       provenance=provenance), folder)
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [fold_run(tmp_path / f"fold{i}", i, dice, threshold)
            for i, (dice, threshold) in enumerate([(0.5, 0.5), (0.7, 0.6), (0.6, 0.65)])]


def test_without_ensemble_the_best_run_is_exported(tmp_path: Path, runs: list[Path]):
    manifest = export(runs, tmp_path / "models" / "unet")
    best = load_model(runs[1]).manifest
    assert manifest.name == "unet" and manifest.sha256 == best.sha256 and not manifest.ensemble
    assert manifest.provenance["exported_from"]["run"] == str(runs[1])
    assert "ensemble" not in json.loads((tmp_path / "models" / "unet" / MANIFEST_NAME).read_text())
    assert load_model(tmp_path / "models" / "unet").manifest.postprocessing.et_threshold == 0.6


def test_ensemble_averages_the_folds_probabilities(tmp_path: Path, runs: list[Path]):
    output = tmp_path / "models" / "unet"
    manifest = export(runs, output, ensemble=True)
    assert [m.weights_file for m in manifest.ensemble] == ["fold0.safetensors", "fold1.safetensors",
                                                           "fold2.safetensors"]
    assert sorted(p.name for p in output.iterdir()) == ["MODEL_CARD.md", "fold0.safetensors", "fold1.safetensors",
                                                        "fold2.safetensors", MANIFEST_NAME]
    assert manifest.postprocessing.et_threshold == 0.6  # median of the folds'
    loaded = load_model(output)
    assert isinstance(loaded.network, EnsembleNetwork) and loaded.manifest.sha256 == manifest.sha256
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.inference_mode():
        mean = torch.stack([torch.sigmoid(load_model(run).network(x)) for run in runs]).mean(0)
        assert torch.allclose(torch.sigmoid(loaded.network(x)), mean, atol=1e-5)
    assert [m.manifest.name for m in load_models(tmp_path / "models", "cpu")] == ["unet"]
    assert "ensemble of 3" in (output / "MODEL_CARD.md").read_text()


def test_tampered_fold_or_edited_manifest_is_refused(tmp_path: Path, runs: list[Path]):
    output = tmp_path / "unet"
    export(runs, output, ensemble=True)
    data = json.loads((output / MANIFEST_NAME).read_text())
    data["ensemble"][1]["weights_file"] = "../fold1.safetensors"
    (output / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="not the digest"):
        load_model(output)
    members = tuple(EnsembleMember(**member) for member in data["ensemble"])
    (output / MANIFEST_NAME).write_text(json.dumps({**data, "sha256": ensemble_sha256(members)}))
    with pytest.raises(WeightsError, match="is not a plain"):
        load_model(output)
    export(runs, output, ensemble=True)
    weights = output / "fold1.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(WeightsError, match="fold1.safetensors: sha256 is"):
        load_model(output)


def test_mixed_runs_and_bad_outputs_are_refused(tmp_path: Path, runs: list[Path]):
    other = tmp_path / "axial"
    config = dict(PRESETS["axial_unet"]["compact"])
    save_model(build_network("axial_unet", config), Manifest("axial", "axial_unet", config, (32, 32, 32), ""), other)
    with pytest.raises(WeightsError, match="export runs of one network only"):
        export([runs[0], other], tmp_path / "out")
    with pytest.raises(SettingsError, match="is one of the --from runs"):
        export(runs, runs[0])
    with pytest.raises(SettingsError, match="the same fold"):
        export([runs[0], runs[0]], tmp_path / "out", ensemble=True)
    export(runs, tmp_path / "ensemble", ensemble=True)
    with pytest.raises(WeightsError, match="already an ensemble"):
        export([tmp_path / "ensemble"], tmp_path / "out")


def test_cli_export_replaces_an_earlier_ensemble(tmp_path: Path, runs: list[Path], capsys: pytest.CaptureFixture):
    output = tmp_path / "models" / "unet"
    args = [arg for run in runs for arg in ("--from", str(run))]
    assert main(["export", *args, "--output", str(output), "--ensemble"]) == 0
    assert "ensemble of 3" in capsys.readouterr().out
    assert main(["export", "--from", str(runs[2]), "--output", str(output)]) == 0
    assert sorted(p.name for p in output.glob("*.safetensors")) == ["weights.safetensors"]
    manifest = load_model(output).manifest
    assert not manifest.ensemble and manifest.postprocessing.et_threshold == 0.65
    assert "Exported from" in (output / "MODEL_CARD.md").read_text()
