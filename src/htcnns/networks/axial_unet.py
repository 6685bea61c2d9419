"""U-Net whose decoder refines each upsampled feature map with 3-D axial self-attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .unet import PAPER_FILTERS, UNet


class AxialAttention3d(nn.Module):
    """Residual multi-head self-attention along D, H and W separately.

    Computes ``x + attn_d(y) + attn_h(y) + attn_w(y)`` with ``y = LayerNorm(x)`` over channels;
    ``attn_d`` attends along D within every (H, W) line, and so on, so the cost is linear in the
    volume (times the axis length).

    Args:
        channels: Feature channels ``C`` (divisible by ``num_heads``).
        num_heads: Attention heads per axis.
    """

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(channels, num_heads, batch_first=True) for _ in range(3)
        )

    @staticmethod
    def _along(attn: nn.MultiheadAttention, y: torch.Tensor, axis: int) -> torch.Tensor:
        """Self-attention of channels-last ``y`` (N, D, H, W, C) along spatial ``axis`` (1, 2 or 3)."""
        moved = y.movedim(axis, 3)  # (N, a, b, L, C)
        seq = moved.reshape(-1, moved.shape[3], moved.shape[4])
        out, _ = attn(seq, seq, seq, need_weights=False)
        return out.reshape(moved.shape).movedim(3, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refine ``x`` (N, C, D, H, W) -> (N, C, D, H, W)."""
        t = x.movedim(1, -1)  # (N, D, H, W, C)
        y = self.norm(t)
        out = sum((self._along(attn, y, axis) for axis, attn in enumerate(self.attn, start=1)), t)
        return out.movedim(-1, 1)  # channels-last strides, like a CPU input


class AxialUNet(UNet):
    """:class:`~htcnns.networks.unet.UNet` with axial attention after chosen decoder upsamplings.

    Args:
        in_channels: Input channels (MRI modalities).
        out_channels: Output logit channels (WT, TC, ET).
        filters: Channels per stage (at least two stages).
        attention_levels: Decoder levels that get axial attention, ``0`` being the coarsest
            (first after the bottleneck) and ``len(filters) - 2`` full resolution.
        num_heads: Attention heads per axis; must divide the channels of every attended level.
        deep_supervision: As in :class:`~htcnns.networks.unet.UNet`.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        filters: Sequence[int] = PAPER_FILTERS,
        attention_levels: Sequence[int] = (0, 1, 2, 3, 4),
        num_heads: int = 4,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, filters, deep_supervision)
        levels = sorted({int(level) for level in attention_levels})
        if levels and not 0 <= levels[0] <= levels[-1] < len(self.decoder):
            raise ValueError(
                f"attention_levels must lie in [0, {len(self.decoder) - 1}], got {list(attention_levels)}"
            )
        for level in levels:
            up_block = self.decoder[level]
            up_block.refine = AxialAttention3d(up_block.up.out_channels, num_heads)
