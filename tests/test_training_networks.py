"""Training-time networks: deep supervision of the U-Net (exported without its heads), frozen encoders."""

from pathlib import Path

import pytest
import torch

from htcnns.errors import WeightsError
from htcnns.networks import PRESETS, build_network
from htcnns.training.networks import (
    ENCODER_PARAMETERS,
    freeze_encoder,
    level_weights,
    load_parent_weights,
    plain_network,
    supervised_loss,
    training_network,
    uses_deep_supervision,
)
from htcnns.weights import load_model

BUNDLED_UNET = Path(__file__).resolve().parents[1] / "models" / "unet"
COMPACT = PRESETS["unet"]["compact"]


def test_level_weights_halve_and_sum_to_one():
    assert level_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert level_weights(1) == [1.0]


def test_deep_supervision_only_for_unet():
    assert uses_deep_supervision("unet", True)
    assert not uses_deep_supervision("unet", False)
    assert not uses_deep_supervision("axial_unet", True) and not uses_deep_supervision("transbts", True)


def test_supervised_loss_weighs_each_level_against_a_downsampled_target():
    target = torch.zeros(1, 3, 8, 8, 8)
    target[:, :, :4] = 1
    outputs = [torch.zeros(1, 3, 8, 8, 8), torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 3, 2, 2, 2)]
    seen = []

    def mean_target(output: torch.Tensor, level_target: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(level_target.shape[2:]))
        return level_target.mean() * output.shape[2]

    total = supervised_loss(mean_target, outputs, target)
    assert seen == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    assert total.item() == pytest.approx(0.5 * (8 * 4 / 7 + 4 * 2 / 7 + 2 * 1 / 7))
    assert supervised_loss(mean_target, outputs[0], target).item() == pytest.approx(4.0)


def test_deep_supervised_unet_trains_with_three_outputs_and_exports_the_plain_layout():
    torch.manual_seed(0)
    network = training_network("unet", COMPACT, deep_supervision=True)
    x = torch.randn(1, 4, 32, 32, 32)
    outputs = network.train()(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(32, 32, 32), (16, 16, 16), (8, 8, 8)]
    plain = plain_network(network, "unet", COMPACT)
    assert set(plain.state_dict()) == set(build_network("unet", COMPACT).state_dict())
    assert not plain.training
    with torch.inference_mode():
        assert torch.equal(plain(x), network.eval()(x))


@pytest.mark.skipif(not (BUNDLED_UNET / "manifest.json").is_file(), reason="bundled models/unet is absent")
def test_bundled_unet_goes_through_the_training_network_unchanged():
    bundled = load_model(BUNDLED_UNET)
    network = training_network("unet", bundled.manifest.config, deep_supervision=True)
    load_parent_weights(network, bundled.network.state_dict())
    exported = plain_network(network, "unet", bundled.manifest.config)
    x = torch.randn(1, 4, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(exported(x), bundled.network(x))


def test_parent_weights_that_do_not_fit_are_refused():
    network = training_network("unet", COMPACT, deep_supervision=True)
    other = build_network("axial_unet", PRESETS["axial_unet"]["compact"]).state_dict()
    with pytest.raises(WeightsError, match="parent weights do not fit"):
        load_parent_weights(network, other)


@pytest.mark.parametrize("architecture", sorted(ENCODER_PARAMETERS), ids=sorted(ENCODER_PARAMETERS))
def test_freeze_encoder_freezes_exactly_the_encoder(architecture: str):
    config = dict(PRESETS[architecture]["compact"])
    if "roi_size" in config:
        config["roi_size"] = 32
    network = build_network(architecture, config)
    frozen = set(freeze_encoder(network, architecture))
    assert frozen and all(name.startswith(ENCODER_PARAMETERS[architecture]) for name in frozen)
    for name, parameter in network.named_parameters():
        assert parameter.requires_grad == (name not in frozen)
    assert not any(name.startswith(("decoder.", "head.")) for name in frozen)
