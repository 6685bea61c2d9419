"""TransBTS: 3-D CNN encoder, Transformer bottleneck at 1/8 resolution, progressive-upsampling CNN decoder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .unet import Conv3d, ConvNormAct, UpBlock, check_spatial_size, conv_block, cpu_layout, head

DOWNSAMPLE = 8  # three stride-2 downsamplings


class TransBTS(nn.Module):
    """TransBTS for 3-D multi-modal MRI segmentation.

    The encoder has stages of ``b, 2b, 4b, K`` channels (``b = base_channels``,
    ``K = bottleneck_channels``) at full, 1/2, 1/4 and 1/8 resolution. The 1/8 feature map is
    projected by a 3x3x3 conv to ``embed_dim``-d tokens, given learned position embeddings and
    passed through a pre-norm Transformer encoder; the tokens are folded back into a feature map,
    mapped to ``K`` channels and decoded by transposed-conv up blocks with encoder skips.

    Args:
        in_channels: Input channels (MRI modalities).
        out_channels: Output logit channels (WT, TC, ET).
        roi_size: Edge of the cubic training window; the position embedding has ``roi_size / 8``
            tokens per axis and is trilinearly resized for other grids.
        base_channels: Channels of the full-resolution encoder stage.
        bottleneck_channels: Channels ``K`` of the 1/8-resolution CNN features.
        embed_dim: Token dimension.
        num_layers: Transformer encoder layers.
        num_heads: Attention heads per layer.
        mlp_dim: Hidden size of each Transformer MLP.
        dropout: Dropout in the Transformer (``nn.Dropout`` modules, inactive in eval mode).
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        roi_size: int = 128,
        base_channels: int = 16,
        bottleneck_channels: int = 128,
        embed_dim: int = 512,
        num_layers: int = 4,
        num_heads: int = 8,
        mlp_dim: int = 4096,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if roi_size % DOWNSAMPLE or roi_size <= 0:
            raise ValueError(f"roi_size must be a positive multiple of {DOWNSAMPLE}, got {roi_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        b, k = base_channels, bottleneck_channels
        self.encoder = nn.ModuleList(
            [
                conv_block(in_channels, b),
                conv_block(b, 2 * b, 2),
                conv_block(2 * b, 4 * b, 2),
                conv_block(4 * b, k, 2),
            ]
        )
        self.project = Conv3d(k, embed_dim, kernel_size=3, padding=1)
        grid = roi_size // DOWNSAMPLE
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid, grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            embed_dim, num_heads, mlp_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
        )
        self.unproject = ConvNormAct(embed_dim, k)
        self.decoder = nn.ModuleList([UpBlock(k, 4 * b), UpBlock(4 * b, 2 * b), UpBlock(2 * b, b)])
        self.head = head(b, out_channels)

    @staticmethod
    def divisor_for(config: Mapping[str, Any]) -> int:
        """Multiple that spatial sizes must have (independent of ``config``)."""
        return DOWNSAMPLE

    @property
    def size_divisor(self) -> int:
        """Multiple that spatial sizes must have."""
        return DOWNSAMPLE

    def position_embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Position embedding (1, embed_dim, *grid), trilinearly resized if ``grid`` is not the ROI grid."""
        if tuple(self.pos_embed.shape[2:]) == grid:
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=grid, mode="trilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` (N, C_in, D, H, W), with D, H, W multiples of 8, into logits (N, C_out, D, H, W)."""
        check_spatial_size(x, DOWNSAMPLE)
        x = cpu_layout(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.project(skips.pop())
        n, c, d, h, w = x.shape
        x = x + self.position_embedding((d, h, w))
        tokens = self.transformer(self.pos_drop(x.flatten(2).transpose(1, 2)))  # (N, d*h*w, embed_dim)
        x = self.unproject(tokens.transpose(1, 2).reshape(n, c, d, h, w))
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x).contiguous()
