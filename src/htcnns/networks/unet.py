"""nnU-Net-style 3-D U-Net with optional deep supervision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that always uses oneDNN for float32 CPU tensors.

    PyTorch's backend heuristic is tuned for 2-D inputs and sends batch-1 3-D inputs with
    ``C * D * H <= 20480`` (e.g. 32 x 24^3) to a generic kernel that is ~8x slower.
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
        ):
            return torch.mkldnn_convolution(
                x, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(x, weight, bias)


PAPER_FILTERS = (32, 64, 128, 256, 320, 320)


def check_spatial_size(x: torch.Tensor, divisor: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (N, C, D, H, W) with D, H, W multiples of ``divisor``."""
    if x.ndim != 5 or any(s % divisor for s in x.shape[2:]):
        raise ValueError(
            f"expected input (N, C, D, H, W) with D, H, W multiples of {divisor}, got {tuple(x.shape)}"
        )


def cpu_layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last ``x`` (N, C, D, H, W) on CPU (oneDNN 3-D convs run 2-3x faster there); else ``x``."""
    return x.contiguous(memory_format=torch.channels_last_3d) if x.device.type == "cpu" else x


def instance_norm(channels: int) -> nn.Module:
    """Affine instance norm, as GroupNorm with one group per channel (same maths, ~3x faster on CPU)."""
    return nn.GroupNorm(channels, channels)


class ConvNormAct(nn.Sequential):
    """3x3x3 conv (stride ``stride``) -> InstanceNorm -> LeakyReLU(0.01)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            instance_norm(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Two :class:`ConvNormAct` layers; the first one has ``stride``."""
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, stride), ConvNormAct(out_channels, out_channels)
    )


def head(in_channels: int, out_channels: int) -> nn.Module:
    """1x1x1 conv logit head."""
    return Conv3d(in_channels, out_channels, kernel_size=1)


class UpBlock(nn.Module):
    """Transposed-conv x2 upsampling -> ``refine`` -> concat skip -> conv block.

    ``refine`` is an identity here; :class:`~htcnns.networks.axial_unet.AxialUNet` swaps in axial attention.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)
        self.refine: nn.Module = nn.Identity()
        self.conv = conv_block(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Fuse ``x`` (N, C_in, d, h, w) with ``skip`` (N, C_out, 2d, 2h, 2w) -> (N, C_out, 2d, 2h, 2w)."""
        x = cpu_layout(self.refine(self.up(x)))  # small transposed convs return channels-first
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """nnU-Net-style 3-D U-Net.

    Stage ``i`` has ``filters[i]`` channels at ``1/2**i`` resolution; every stage after the first
    downsamples with a stride-2 conv. The decoder mirrors the encoder with transposed convs and
    concatenated skips; a 1x1x1 conv head gives the logits.

    Args:
        in_channels: Input channels (MRI modalities).
        out_channels: Output logit channels (WT, TC, ET).
        filters: Channels per stage (at least two stages).
        deep_supervision: In training mode return logits at full, 1/2, 1/4, ... resolution
            (every decoder level except the lowest); eval mode always returns one tensor.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        filters: Sequence[int] = PAPER_FILTERS,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        filters = [int(f) for f in filters]
        if len(filters) < 2 or min(filters) < 1:
            raise ValueError(f"filters must list at least two positive channel counts, got {filters}")
        self.deep_supervision = bool(deep_supervision)
        strides = [1] + [2] * (len(filters) - 1)
        self.encoder = nn.ModuleList(
            conv_block(c_in, c_out, s)
            for c_in, c_out, s in zip([in_channels, *filters[:-1]], filters, strides, strict=True)
        )
        # decoder[j] maps stage n-1-j to stage n-2-j (coarsest first).
        self.decoder = nn.ModuleList(
            UpBlock(filters[i + 1], filters[i]) for i in reversed(range(len(filters) - 1))
        )
        self.head = head(filters[0], out_channels)
        # aux_heads[i - 1] reads the decoder output at 1/2**i resolution (all but the lowest decoder level).
        n_aux = len(filters) - 3 if self.deep_supervision else 0
        self.aux_heads = nn.ModuleList(head(filters[i], out_channels) for i in range(1, n_aux + 1))

    @staticmethod
    def divisor_for(config: Mapping[str, Any]) -> int:
        """Multiple that spatial sizes must have for a network built from ``config``."""
        return 2 ** (len(config.get("filters", PAPER_FILTERS)) - 1)

    @property
    def size_divisor(self) -> int:
        """Multiple that spatial sizes must have."""
        return 2 ** (len(self.encoder) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment ``x`` (N, C_in, D, H, W), with D, H, W multiples of :attr:`size_divisor`.

        Returns:
            Logits (N, C_out, D, H, W); with deep supervision in training mode, the list
            ``[(N, C_out, D, H, W), (N, C_out, D/2, H/2, W/2), ...]``.
        """
        check_spatial_size(x, self.size_divisor)
        x = cpu_layout(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        decoded = []
        for block in self.decoder:
            x = block(x, skips.pop())
            decoded.append(x)
        out = self.head(x).contiguous()
        if not (self.deep_supervision and self.training):
            return out
        # decoded[-1 - i] is at 1/2**i resolution.
        return [out, *(aux(decoded[-1 - i]).contiguous() for i, aux in enumerate(self.aux_heads, start=1))]
