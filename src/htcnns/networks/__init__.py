"""Segmentation networks (U-Net, TransBTS, axial-attention U-Net), presets and a config-driven factory."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from .axial_unet import AxialAttention3d, AxialUNet
from .transbts import TransBTS
from .unet import UNet

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "AxialAttention3d",
    "AxialUNet",
    "TransBTS",
    "UNet",
    "build_network",
    "size_divisor",
]

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "transbts": TransBTS, "axial_unet": AxialUNet}

# JSON-serialisable constructor kwargs. "paper" follows the paper; "compact" runs on a 2-core CPU.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "unet": {
        "paper": {"filters": [32, 64, 128, 256, 320, 320], "deep_supervision": False},
        "compact": {"filters": [8, 16, 32, 64, 96], "deep_supervision": False},
    },
    "transbts": {
        "paper": {
            "roi_size": 128,
            "base_channels": 16,
            "bottleneck_channels": 128,
            "embed_dim": 512,
            "num_layers": 4,
            "num_heads": 8,
            "mlp_dim": 4096,
            "dropout": 0.1,
        },
        "compact": {
            "roi_size": 96,
            "base_channels": 8,
            "bottleneck_channels": 64,
            "embed_dim": 96,
            "num_layers": 2,
            "num_heads": 4,
            "mlp_dim": 192,
            "dropout": 0.1,
        },
    },
    "axial_unet": {
        "paper": {
            "filters": [32, 64, 128, 256, 320, 320],
            "attention_levels": [0, 1, 2, 3, 4],
            "num_heads": 4,
            "deep_supervision": False,
        },
        "compact": {
            "filters": [8, 16, 32, 64, 96],
            "attention_levels": [0, 1],
            "num_heads": 2,
            "deep_supervision": False,
        },
    },
}


def _network_class(architecture: str, config: Mapping[str, Any]) -> Any:
    """Look up ``architecture`` and check that ``config`` only holds its constructor's keyword args."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; valid architectures: {sorted(ARCHITECTURES)}"
        )
    cls = ARCHITECTURES[architecture]
    valid = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise TypeError(f"unknown config keys for {architecture!r}: {unknown}; valid keys: {valid}")
    return cls


def build_network(architecture: str, config: Mapping[str, Any]) -> nn.Module:
    """Build a network from its architecture name and JSON-serialisable constructor kwargs.

    Args:
        architecture: One of :data:`ARCHITECTURES` (``"unet"``, ``"transbts"``, ``"axial_unet"``).
        config: Constructor kwargs, e.g. ``PRESETS[architecture]["compact"]``.

    Returns:
        A module mapping (N, in_channels, D, H, W) to logits (N, out_channels, D, H, W).

    Raises:
        ValueError: Unknown architecture or invalid config values.
        TypeError: Config keys the architecture does not accept.
    """
    return _network_class(architecture, config)(**config)


def size_divisor(architecture: str, config: Mapping[str, Any]) -> int:
    """Multiple that the spatial sizes of inputs to ``build_network(architecture, config)`` must have."""
    return _network_class(architecture, config).divisor_for(config)
