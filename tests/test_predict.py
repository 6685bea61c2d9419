from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from htcnns.errors import SettingsError
from htcnns.inference.predict import (
    CPU_WINDOWS_PER_PASS,
    MAX_WINDOWS_PER_PASS,
    MIRROR_AXES,
    predict,
    resolve_device,
    sliding_window_logits,
    to_network_input,
    windows_that_fit,
)
from htcnns.weights import load_model


@pytest.mark.parametrize("architecture", ["unet", "transbts", "axial_unet"])
def test_equals_plain_monai_sliding_window(tiny_models: Path, architecture: str):
    model = load_model(tiny_models / architecture)
    image = to_network_input(np.random.default_rng(0).normal(size=(4, 40, 36, 34)).astype(np.float32),
                             torch.device("cpu"))
    for batch in (1, CPU_WINDOWS_PER_PASS):
        ours = sliding_window_logits(image, model, sw_batch_size=None if batch > 1 else 1)  # None: CPU default
        with torch.no_grad():
            reference = sliding_window_inference(image, (32, 32, 32), batch, model.network, overlap=0.6,
                                                 mode="gaussian")
        assert ours.shape == (1, 3, 40, 36, 34)
        assert (ours - reference).abs().max() <= 1e-5


def test_mirroring_averages_the_eight_mirror_images_and_commutes_with_a_flip(tiny_models: Path):
    model = load_model(tiny_models / "unet")
    image = to_network_input(np.random.default_rng(1).normal(size=(4, 32, 32, 32)).astype(np.float32),
                             torch.device("cpu"))  # one window: the window grid is the same flipped
    with torch.no_grad():
        expected = sum(torch.sigmoid(model.network(image.flip(a))).flip(a) for a in MIRROR_AXES) / 8
    mirrored = predict(image, model, mirror=True).probs
    assert len(set(MIRROR_AXES)) == 8 and np.abs(mirrored - expected[0].numpy()).max() <= 1e-5
    plain = predict(image, model).probs
    assert np.abs(mirrored - plain).max() > 1e-3  # an untrained network is not flip-symmetric by itself
    flipped = predict(image.flip(2), model, mirror=True).probs
    assert np.abs(flipped - mirrored[:, ::-1]).max() <= 1e-5  # axis 2 of the tensor: x


def test_windows_that_fit_half_the_free_memory():
    assert windows_that_fit(free_bytes=8 << 30, bytes_per_window=1 << 30) == 4
    assert windows_that_fit(free_bytes=1 << 30, bytes_per_window=4 << 30) == 1
    assert windows_that_fit(free_bytes=1 << 40, bytes_per_window=1 << 20) == MAX_WINDOWS_PER_PASS


def test_image_smaller_than_window_is_padded_and_cropped_back(tiny_models: Path):
    model = load_model(tiny_models / "unet")
    image = to_network_input(np.ones((4, 20, 25, 18), np.float32), torch.device("cpu"))
    result = predict(image, model)
    assert result.probs.shape == (3, 20, 25, 18)
    assert result.probs.dtype == np.float32 and (result.probs >= 0).all() and (result.probs <= 1).all()


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
