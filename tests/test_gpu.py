"""The CUDA path (skipped without a GPU; benchmarks/gpu_check.sh runs it on a lent one)."""

from pathlib import Path

import pytest
import torch

from conftest import brain_volumes, write_case
from htcnns.inference.cases import find_cases
from htcnns.inference.pipeline import Settings, load_case, load_models, segment_case
from htcnns.inference.predict import to_network_input, windows_per_pass
from htcnns.weights import load_model, save_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


def test_gpu_labels_agree_with_the_cpu(tiny_models: Path, tmp_path: Path):
    [case] = find_cases(write_case(tmp_path / "G-1", "G-1", brain_volumes((40, 44, 36))))
    ready = load_case(case)
    cpu = segment_case(case, load_models(tiny_models, "cpu"), Settings(device="cpu"), ready=ready).labels
    gpu_models = load_models(tiny_models, "cuda")
    gpu = segment_case(case, gpu_models, Settings(device="cuda"), ready=ready).labels
    low = segment_case(case, gpu_models, Settings(device="cuda", low_memory=True, sw_batch_size=1), ready=ready)
    assert (gpu == cpu).mean() >= 0.999 and (low.labels == cpu).mean() >= 0.999
    assert windows_per_pass(to_network_input(ready.prepared.image, torch.device("cuda")), gpu_models[0]) >= 1


def test_onnxruntime_on_cuda_when_its_provider_is_installed(tiny_models: Path, tmp_path: Path):
    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (onnxruntime-gpu is not installed)")
    torch_model = load_model(tiny_models / "unet", "cuda")
    save_model(torch_model.network.cpu(), torch_model.manifest, tmp_path / "unet", onnx=True)
    onnx_model = load_model(tmp_path / "unet", "cuda", backend="onnxruntime")
    windows = torch.randn(2, 4, 32, 32, 32, device="cuda")
    with torch.inference_mode():
        reference = load_model(tiny_models / "unet", "cuda").network(windows)
        ours = onnx_model.predictor(windows)
    assert ours.device.type == "cuda" and (ours - reference).abs().max() <= 1e-3 * reference.abs().max() + 1e-4
