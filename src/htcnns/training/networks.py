"""Training-time variants of the networks: deep supervision (U-Net), a frozen encoder, and the plain network exported.

Deep supervision (``unet`` only): training uses the preset's U-Net built with ``deep_supervision=True``, whose extra
1x1x1 heads read the decoder at 1/2, 1/4, ... resolution (all decoder levels but the coarsest: 1/2 and 1/4 for the
compact preset). The loss is the weighted sum of the loss of each output against the target downsampled by nearest
neighbour, with weights 1, 1/2, 1/4, ... normalised to sum to 1 (as nnU-Net). The exported network is the preset's
plain U-Net with the auxiliary heads dropped: its weights file holds the same tensors as one trained without deep
supervision, and ``forward`` returns the full-resolution logits only.

Encoder (``--freeze-encoder``): the parameters whose names start with ``ENCODER_PARAMETERS[architecture]`` get
``requires_grad`` False and stay out of the optimiser: for the U-Nets (plain and axial) the convolution stages of the
contracting path (``encoder``); for TransBTS the CNN stages, the token projection, the position embedding and the
Transformer (everything before the tokens are folded back into a feature map). Norm layers are GroupNorm and
LayerNorm, which keep no running statistics, so frozen parameters do not change at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from htcnns.errors import WeightsError
from htcnns.networks import build_network

ENCODER_PARAMETERS: dict[str, tuple[str, ...]] = {
    "unet": ("encoder.",),
    "axial_unet": ("encoder.",),
    "transbts": ("encoder.", "project.", "pos_embed", "transformer."),
}
AUX_PREFIX = "aux_heads."


def uses_deep_supervision(architecture: str, requested: bool) -> bool:
    """Whether a run trains with deep supervision: asked for, and the architecture is ``unet``."""
    return requested and architecture == "unet"


def training_network(architecture: str, config: Mapping[str, Any], deep_supervision: bool) -> nn.Module:
    """The network that is trained: the preset's, with auxiliary heads when ``deep_supervision``."""
    if deep_supervision:
        return build_network(architecture, {**config, "deep_supervision": True})
    return build_network(architecture, config)


def load_parent_weights(network: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load an exported (plain) state dict into a training network; only auxiliary heads may stay as initialised.

    Raises:
        WeightsError: tensors other than auxiliary heads are missing or unexpected.
    """
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.startswith(AUX_PREFIX)]
    if missing or unexpected:
        raise WeightsError(f"parent weights do not fit the network: missing {missing}, unexpected {unexpected}")


def plain_network(network: nn.Module, architecture: str, config: Mapping[str, Any]) -> nn.Module:
    """The preset's network (``config``) in eval mode, with the trained weights minus any auxiliary heads."""
    plain = build_network(architecture, config)
    state = {name: tensor for name, tensor in network.state_dict().items() if not name.startswith(AUX_PREFIX)}
    plain.load_state_dict(state, strict=True)
    return plain.eval()


def freeze_encoder(network: nn.Module, architecture: str) -> list[str]:
    """Set ``requires_grad`` False on the encoder's parameters (module docstring); returns their names."""
    frozen = []
    for name, parameter in network.named_parameters():
        if name.startswith(ENCODER_PARAMETERS[architecture]):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def level_weights(levels: int) -> list[float]:
    """Loss weights of the outputs at full, 1/2, 1/4, ... resolution: 1, 1/2, 1/4, ... normalised to sum 1."""
    raw = [0.5**level for level in range(levels)]
    return [weight / sum(raw) for weight in raw]


def supervised_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``loss`` of one output, or the weighted deep-supervision loss of a list of outputs (module docstring).

    Args:
        outputs: logits (N, C, D, H, W), or a list of them at full, 1/2, 1/4, ... resolution.
        target: float32 (N, C, D, H, W) in {0, 1} at full resolution.
    """
    if isinstance(outputs, torch.Tensor):
        return loss(outputs, target)
    terms = [weight * loss(output, F.interpolate(target, size=output.shape[2:], mode="nearest"))
             for weight, output in zip(level_weights(len(outputs)), outputs, strict=True)]
    return torch.stack(terms).sum()
