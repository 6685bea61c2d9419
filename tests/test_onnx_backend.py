"""The ONNX Runtime backend: files made from the verified weights, refused when altered, parity with torch."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import require_real_case, save_tiny_models, write_real_crop
from htcnns.cli import main
from htcnns.errors import SettingsError, WeightsError
from htcnns.inference.onnx_backend import ONNX_NAME
from htcnns.inference.pipeline import load_models
from htcnns.training.export import ExportOptions, export
from htcnns.weights import MANIFEST_NAME, load_model

ROI = (32, 32, 32)


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three compact architectures, randomly initialised, saved with their ONNX files (ROI 32)."""
    return save_tiny_models(tmp_path_factory.mktemp("onnx-models"), seed=1, onnx=True)


def logit_tolerance(logits: torch.Tensor) -> float:
    """1e-3 of the logit range: torch's own float32 channels-last GroupNorm is off by ~4e-4 of it (onnx_backend)."""
    return 1e-3 * float(logits.abs().max()) + 1e-4


@pytest.mark.parametrize("architecture", ["unet", "transbts", "axial_unet"])
def test_window_logits_match_torch_and_float64(onnx_models: Path, architecture: str):
    torch_model = load_model(onnx_models / architecture)
    onnx_model = load_model(onnx_models / architecture, backend="onnxruntime")
    assert onnx_model.backend == "onnxruntime" and torch_model.backend == "torch"
    windows = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 4, *ROI)).astype(np.float32))
    with torch.inference_mode():
        ours, reference = onnx_model.predictor(windows), torch_model.network(windows)
        exact = torch_model.network.double()(windows.double())
    assert ours.shape == reference.shape == (2, 3, *ROI) and ours.dtype == torch.float32
    assert (ours - reference).abs().max() <= logit_tolerance(reference)
    assert (ours.double() - exact).abs().max() <= logit_tolerance(exact)


def test_manifest_lists_the_onnx_file_of_these_weights(onnx_models: Path):
    manifest = json.loads((onnx_models / "unet" / MANIFEST_NAME).read_text())
    assert manifest["onnx"]["file"] == ONNX_NAME and manifest["onnx"]["weights_sha256"] == manifest["sha256"]
    assert manifest["onnx"]["roi_size"] == list(ROI) and len(manifest["onnx"]["sha256"]) == 64


def copy_model(onnx_models: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "unet"
    shutil.copytree(onnx_models / "unet", folder)
    return folder


def test_tampered_onnx_file_is_refused(onnx_models: Path, tmp_path: Path):
    folder = copy_model(onnx_models, tmp_path)
    data = bytearray((folder / ONNX_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ONNX_NAME).write_bytes(bytes(data))
    load_model(folder)  # the torch backend does not read the ONNX file
    with pytest.raises(WeightsError, match=r"network\.onnx: sha256 is .* the file is corrupt or was replaced"):
        load_model(folder, backend="onnxruntime")


def test_onnx_of_other_weights_or_window_is_refused(onnx_models: Path, tmp_path: Path):
    folder = copy_model(onnx_models, tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["roi_size"] = [48, 48, 48]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="was made from weights .* at window .* re-export it"):
        load_model(folder, backend="onnxruntime")
    del manifest["onnx"]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="has no ONNX file; make one with `htcnns export --onnx`"):
        load_model(folder, backend="onnxruntime")


def test_export_sets_window_and_adds_onnx(onnx_models: Path, tmp_path: Path):
    manifest = export([onnx_models / "transbts"], tmp_path / "transbts",
                      options=ExportOptions(window=40, onnx=True, window_reason="chosen by a test"))
    assert manifest.roi_size == (40, 40, 40) and manifest.onnx.roi_size == (40, 40, 40)
    assert manifest.provenance["inference_roi_change"] == {"from": 32, "to": 40, "reason": "chosen by a test"}
    assert load_model(tmp_path / "transbts", backend="onnxruntime").runner is not None
    plain = export([onnx_models / "unet"], tmp_path / "unet")
    assert plain.onnx is None and not (tmp_path / "unet" / ONNX_NAME).exists()
    with pytest.raises(SettingsError, match="must be a multiple of 8"):
        export([onnx_models / "transbts"], tmp_path / "odd", options=ExportOptions(window=44))


def test_cli_export_onnx_then_segment_with_onnxruntime(onnx_models: Path, tmp_path: Path, case_dir: Path):
    models = tmp_path / "models"
    for name in ("unet", "axial_unet"):
        assert main(["export", "--from", str(onnx_models / name), "--output", str(models / name), "--onnx"]) == 0
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["segment", "-i", str(case_dir), "-o", str(out), "--models", str(models), "--device", "cpu",
                     "--backend", backend]) == 0
        outputs[backend] = np.asarray(nib.load(next(out.glob("*.nii.gz"))).dataobj)
        assert json.loads((out / "htcnns-report.json").read_text())["backend"] == backend
    assert (outputs["torch"] == outputs["onnxruntime"]).mean() >= 0.999


def test_bundled_models_give_the_same_labels_with_both_backends(tmp_path: Path):
    """Real case around its tumour, bundled weights: the two backends' label maps agree on >= 99.9 % of voxels
    (measured 99.994 % on the whole case)."""
    require_real_case()
    bundled = load_models(Path(__file__).resolve().parents[1] / "models", "cpu")
    if any(m.manifest.onnx is None for m in bundled):
        pytest.skip("the bundled models have no ONNX files")
    inputs = write_real_crop(tmp_path / "in")
    labels = {}
    for backend in ("torch", "onnxruntime"):
        assert main(["segment", "-i", str(inputs), "-o", str(tmp_path / backend), "--backend", backend]) == 0
        labels[backend] = np.asarray(nib.load(tmp_path / backend / "BraTS-GLI-00001-000.nii.gz").dataobj)
    assert (labels["torch"] == labels["onnxruntime"]).mean() >= 0.999
