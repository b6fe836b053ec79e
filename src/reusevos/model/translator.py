"""The refine-translator: the deep refinement state of a reused frame, from the last computed one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reusevos.model.refiner import ResidualBlock


class RefineTranslator(nn.Module):
    """R_prev ``(B, 64, H/16, W/16)`` + Delta_t ``(B, 1, H/16, W/16)`` -> R_hat ``(B, 64, H/16, W/16)``.

    Three parallel 3x3 convs with dilations 1, 2, 3 (48 channels each) see the change at several
    ranges; a 5x5 conv merges them to 64 channels and a residual block refines the result. R_hat
    replaces the output of the deep (stride 32 and 16) refinement levels on a reused frame.
    """

    def __init__(self, channels: int = 64, branch: int = 48):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels + 1, branch, 3, padding=d, dilation=d) for d in (1, 2, 3))
        self.merge = nn.Conv2d(3 * branch, channels, 5, padding=2)
        self.residual = ResidualBlock(channels)

    def forward(self, state_prev: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        x = torch.cat([state_prev, delta], dim=1)
        x = torch.cat([F.relu(branch(x)) for branch in self.branches], dim=1)
        return self.residual(self.merge(x))
