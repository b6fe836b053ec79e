"""The reuse gate: the probability that an object's last computed state can be reused.

P_gate = sigmoid(w2 * pool(w1 * pool(D_t))): max-pooled to 7x7, a 3x3 stride-2 conv (64 -> 16) with
batch norm, max-pooled to 3x3, a 3x3 conv to one logit. The decision to reuse is P_gate >= tau.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Gate(nn.Module):
    """D_t ``(B, 64, h, w)`` -> P_gate ``(B,)`` in (0, 1) (``logits`` gives the pre-sigmoid values)."""

    def __init__(self, channels: int = 64, hidden: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, stride=2)
        self.norm = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, 1, 3)

    def logits(self, change: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_max_pool2d(change, 7)
        x = F.relu(self.norm(self.conv1(x)))  # 7x7 -> 3x3
        x = F.adaptive_max_pool2d(x, 3)
        return self.conv2(x).flatten()  # 3x3 -> 1x1

    def forward(self, change: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(change))

    @torch.no_grad()
    def calibrate(self, logits: torch.Tensor, reuse_rate: float, threshold: float = 0.5) -> None:
        """Shift the final bias so that a fraction ``reuse_rate`` of the given logits would reuse at
        ``threshold`` (the paper starts training with about 15% of frames reused)."""
        target_logit = torch.logit(torch.tensor(threshold, dtype=logits.dtype))
        quantile = torch.quantile(logits.float(), 1.0 - reuse_rate)
        self.conv2.bias += target_logit - quantile.to(self.conv2.bias.dtype)
