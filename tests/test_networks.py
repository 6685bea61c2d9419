"""Tests for the segmentation networks, presets and factory in htcnns.networks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from htcnns.networks import ARCHITECTURES, PRESETS, AxialAttention3d, build_network, size_divisor
from htcnns.networks.unet import Conv3d, instance_norm

ARCHS = sorted(ARCHITECTURES)


def _compact(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(arch, PRESETS[arch]["compact"])


def _input(size: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, size, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_presets_cover_all_architectures_and_are_json(arch: str) -> None:
    assert set(PRESETS) == set(ARCHITECTURES)
    assert set(PRESETS[arch]) == {"paper", "compact"}
    for config in PRESETS[arch].values():
        assert json.loads(json.dumps(config)) == config


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_compact_output_shape_and_eval_determinism(arch: str) -> None:
    net = _compact(arch).eval()
    divisor = size_divisor(arch, PRESETS[arch]["compact"])
    size = 2 * divisor
    x = _input(size, batch=2)
    with torch.inference_mode():
        first, second = net(x), net(x)
    assert first.shape == (2, 3, size, size, size)
    assert first.dtype == torch.float32 and first.is_contiguous()
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_build_network_round_trip_through_json(arch: str) -> None:
    config = json.loads(json.dumps(PRESETS[arch]["compact"]))
    original = _compact(arch).eval()
    rebuilt = build_network(arch, config).eval()
    assert type(rebuilt) is ARCHITECTURES[arch]
    rebuilt.load_state_dict(original.state_dict())
    x = _input(2 * size_divisor(arch, config))
    with torch.inference_mode():
        assert torch.equal(original(x), rebuilt(x))


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_backward_gives_finite_gradients(arch: str) -> None:
    net = _compact(arch).train()
    x = _input(2 * size_divisor(arch, PRESETS[arch]["compact"]))
    net(x).square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_rejects_size_not_divisible(arch: str) -> None:
    net = _compact(arch).eval()
    size = size_divisor(arch, PRESETS[arch]["compact"]) + 4
    with pytest.raises(ValueError, match="multiples of"), torch.inference_mode():
        net(_input(size))


def test_unknown_architecture_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="nnformer") as info:
        build_network("nnformer", {})
    for name in ARCHITECTURES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unet"):
        size_divisor("nnformer", {})


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(TypeError, match="filterz"):
        build_network("unet", {"filterz": [8, 16]})


def test_size_divisor() -> None:
    assert size_divisor("unet", PRESETS["unet"]["paper"]) == 32
    assert size_divisor("unet", PRESETS["unet"]["compact"]) == 16
    assert size_divisor("axial_unet", PRESETS["axial_unet"]["compact"]) == 16
    assert size_divisor("transbts", PRESETS["transbts"]["compact"]) == 8
    assert size_divisor("unet", {}) == 32


def test_transbts_interpolates_position_embedding() -> None:
    net = _compact("transbts").eval()
    assert net.pos_embed.shape[2:] == (12, 12, 12)
    x = torch.randn(1, 4, 16, 24, 32)
    with torch.inference_mode():
        assert net.position_embedding((2, 3, 4)).shape == (1, 96, 2, 3, 4)
        assert torch.equal(net.position_embedding((12, 12, 12)), net.pos_embed)
        assert net(x).shape == (1, 3, 16, 24, 32)


def test_transbts_rejects_bad_roi_size() -> None:
    with pytest.raises(ValueError, match="roi_size"):
        build_network("transbts", {**PRESETS["transbts"]["compact"], "roi_size": 100})


@pytest.mark.parametrize("arch", ["unet", "axial_unet"], ids=["unet", "axial_unet"])
def test_deep_supervision_list_in_train_tensor_in_eval(arch: str) -> None:
    net = build_network(arch, {**PRESETS[arch]["compact"], "deep_supervision": True})
    x = _input(32)
    outs = net.train()(x)
    assert isinstance(outs, list)
    assert [o.shape for o in outs] == [(1, 3, 32 // 2**i, 32 // 2**i, 32 // 2**i) for i in range(3)]
    with torch.inference_mode():
        out = net.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 32, 32, 32)


def test_axial_attention_placement() -> None:
    net = _compact("axial_unet")
    kinds = [type(block.refine).__name__ for block in net.decoder]
    assert kinds == ["AxialAttention3d", "AxialAttention3d", "Identity", "Identity"]
    with pytest.raises(ValueError, match="attention_levels"):
        build_network("axial_unet", {**PRESETS["axial_unet"]["compact"], "attention_levels": [4]})


def test_unet_paper_preset_size() -> None:
    net = build_network("unet", PRESETS["unet"]["paper"])
    assert len(net.encoder) == 6
    assert 25e6 <= sum(p.numel() for p in net.parameters()) <= 40e6


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_paper_preset_forward_small_input(arch: str) -> None:
    config = PRESETS[arch]["paper"]
    net = build_network(arch, config).eval()
    size = size_divisor(arch, config)  # 1-voxel bottleneck; batch 2 so instance norm sees > 1 value
    with torch.inference_mode():
        assert net(_input(size, batch=2)).shape == (2, 3, size, size, size)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_compact_presets_are_small(arch: str) -> None:
    assert sum(p.numel() for p in _compact(arch).parameters()) <= 1.3e6


def test_axial_attention_mixes_only_along_axes() -> None:
    torch.manual_seed(0)
    attn = AxialAttention3d(8, num_heads=2).eval()
    x = torch.randn(2, 8, 5, 6, 7)
    bumped = x.clone()
    bumped[1, :, 2, 3, 4] += torch.randn(8)  # not constant: LayerNorm would cancel a constant shift
    with torch.inference_mode():
        changed = (attn(bumped) - attn(x)).abs().amax(dim=1) > 1e-6  # (N, D, H, W)
    expected = torch.zeros_like(changed)
    expected[1, :, 3, 4] = expected[1, 2, :, 4] = expected[1, 2, 3, :] = True
    assert torch.equal(changed, expected)


def test_building_blocks_match_torch_reference() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 32, 12, 12, 12).contiguous(memory_format=torch.channels_last_3d)
    conv = Conv3d(32, 16, kernel_size=3, stride=2, padding=1)
    torch.testing.assert_close(conv(x), F.conv3d(x, conv.weight, conv.bias, stride=2, padding=1))
    norm = instance_norm(32)
    torch.testing.assert_close(norm(x), F.instance_norm(x, eps=norm.eps), atol=1e-5, rtol=1e-5)
