"""The delta generator: the predicted change of the score map since the last computed frame."""

from __future__ import annotations

import torch
from torch import nn


class DeltaGenerator(nn.Module):
    """D_t ``(B, 64, H/8, W/8)`` -> Delta_t ``(B, 1, H/16, W/16)``: one stride-2 3x3 conv.

    On a reused frame the score is S_hat = S_prev + Delta_t.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, stride=2, padding=1)
        nn.init.zeros_(self.conv.weight)  # start by predicting "no change"
        nn.init.zeros_(self.conv.bias)

    def forward(self, change: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        delta = self.conv(change)
        return delta[..., : size[0], : size[1]]
