"""Short-term matching (TTVOS): where is the target now, given where it was one frame ago?

The previous frame's stride-16 feature is fused with the estimated masks of the last frames, then blended
with this frame's feature: between neighbouring frames the target moves little, so the network learns to
find it again near where it was (localisation). The correspondence is learned; nothing is matched explicitly.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    """A ``kernel`` x ``kernel`` convolution (same size) and ReLU: the building block of TTVOS's matching and decoder."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.ReLU(inplace=True))


class ShortTermMatcher(nn.Module):
    """``forward``: this frame's feature x16 ``(1 or B, C, H/16, W/16)``, the previous frame's x16_prev
    ``(B, C, H/16, W/16)`` and the last ``history`` estimated masks ``(B, history, H/16, W/16)`` ->
    ``(B, channels, H/16, W/16)``, one row per object."""

    def __init__(self, feature_channels: int, history: int, channels: int):
        super().__init__()
        self.previous = conv_relu(feature_channels + history, channels, 3)
        self.blend = conv_relu(feature_channels + channels, channels, 3)

    def forward(self, feature: torch.Tensor, feature_prev: torch.Tensor, masks_prev: torch.Tensor) -> torch.Tensor:
        where = self.previous(torch.cat([feature_prev, masks_prev], dim=1))
        return self.blend(torch.cat([feature.expand(where.shape[0], -1, -1, -1), where], dim=1))
