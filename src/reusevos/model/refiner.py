"""The refinement ("segmentation") network: turns a coarse target score into a sharp mask (FRTM's).

U-Net-like over f32, f16, f8, f4 with 64 channels. Split in two for the reuse path:
``deep`` runs the f32 and f16 levels and returns the refinement state R ``(B, 64, H/16, W/16)``;
``shallow`` runs the f8 and f4 levels and the head from R. On a reused frame the translator
replaces ``deep``.

For speed on CPUs (measured in docs/speed.md) the refiner keeps its weights and activations in the
channels-last memory format (oneDNN's fast layout) and the head's last convolution runs at the head's
lower resolution, before the upsampling (see :meth:`Refiner.head`); both give the same function up to
float rounding.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Timed = Callable[[str], AbstractContextManager]
"""``timed(part)``: a context manager around one named part of the network, for measuring it."""


def _untimed(part: str) -> AbstractContextManager:
    return nullcontext()


def resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class ResidualBlock(nn.Module):
    """1x1 conv, then x + conv3x3(relu(conv3x3(x))), relu. ``(B, C, h, w)`` -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.entry = nn.Conv2d(channels, channels, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        return F.relu(x + self.body(x))


class TSE(nn.Module):
    """Target segmentation encoder: features + score -> 64 channels at the level's resolution.

    ``reduce`` depends on the frame only, so it is computed once per frame and shared by all objects.
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1))
        mixed = channels + 1
        self.transform = nn.Sequential(
            nn.Conv2d(mixed, mixed, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mixed, mixed, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mixed, channels, 3, padding=1), nn.ReLU(inplace=True),
        )

    def forward(self, reduced: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """reduced ``(1 or B, 64, h, w)``, score ``(B, 1, h', w')`` -> ``(B, 64, h, w)``."""
        score = resize(score, reduced.shape[-2:])
        reduced = reduced.expand(score.shape[0], -1, -1, -1)
        return self.transform(torch.cat([reduced, score], dim=1))


class ChannelAttention(nn.Module):
    """Weights this level's channels by global context of this and the deeper level, then adds the
    upsampled deeper output. ``shallow (B, 64, h, w)``, ``deeper (B, 64, h', w')`` -> ``(B, 64, h, w)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1))

    def forward(self, shallow: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
        pools = [shallow.mean(dim=(2, 3), keepdim=True), deeper.mean(dim=(2, 3), keepdim=True)]
        weighted = shallow * torch.sigmoid(self.gate(torch.cat(pools, dim=1)))
        return weighted + resize(deeper, shallow.shape[-2:])


class Level(nn.Module):
    """One decoder level: TSE -> residual block -> channel attention with the deeper output -> residual block."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.tse = TSE(in_channels, channels)
        self.rrb1 = ResidualBlock(channels)
        self.cab = ChannelAttention(channels)
        self.rrb2 = ResidualBlock(channels)

    def forward(self, reduced, score, deeper):
        x = self.rrb1(self.tse(reduced, score))
        return self.rrb2(self.cab(x, deeper))


class Refiner(nn.Module):
    """The refinement network. ``feature_channels``: the backbone's (C4, C8, C16, C32)."""

    def __init__(self, feature_channels: tuple[int, int, int, int], channels: int = 64):
        super().__init__()
        c4, c8, c16, c32 = feature_channels
        self.level32 = Level(c32, channels)
        self.level16 = Level(c16, channels)
        self.level8 = Level(c8, channels)
        self.level4 = Level(c4, channels)
        self.head1 = nn.Conv2d(channels, channels // 2, 3, padding=1)
        self.head2 = nn.Conv2d(channels // 2, 1, 3, padding=1)
        self.to(memory_format=torch.channels_last)

    def reduce_deep(self, f16: torch.Tensor, f32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame (object-independent) part of the deep levels: ``(1, 64, H/16, W/16)``, ``(1, 64, H/32, W/32)``."""
        return self.level16.tse.reduce(_channels_last(f16)), self.level32.tse.reduce(_channels_last(f32))

    def reduce_shallow(self, f4: torch.Tensor, f8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame part of the shallow levels: ``(1, 64, H/4, W/4)``, ``(1, 64, H/8, W/8)``."""
        return self.level4.tse.reduce(_channels_last(f4)), self.level8.tse.reduce(_channels_last(f8))

    def deep(self, r16: torch.Tensor, r32: torch.Tensor, score: torch.Tensor, timed: Timed = _untimed) -> torch.Tensor:
        """Refinement state R ``(B, 64, H/16, W/16)`` from the reduced f16/f32 and scores ``(B, 1, H/16, W/16)``.
        ``timed(part)`` wraps each level (``level32``, ``level16``) for whoever measures them."""
        # The deepest level has no deeper output: its own pooled reduced features stand in
        # (a 1x1 map, so the attention's "upsampled deeper output" is that vector broadcast).
        with timed("level32"):
            pool32 = r32.mean(dim=(2, 3), keepdim=True).expand(score.shape[0], -1, -1, -1)
            x32 = self.level32(r32, score, pool32)
        with timed("level16"):
            return self.level16(r16, score, x32)

    def shallow(self, state: torch.Tensor, r4: torch.Tensor, r8: torch.Tensor, score: torch.Tensor,
                image_size: tuple[int, int], timed: Timed = _untimed) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` from R ``(B, 64, H/16, W/16)``, the reduced f4/f8 and the scores;
        ``timed(part)`` wraps ``level8``, ``level4`` and ``head``."""
        with timed("level8"):
            x8 = self.level8(r8, score, state)
        with timed("level4"):
            x4 = self.level4(r4, score, x8)
        with timed("head"):
            return self.head(x4, image_size)

    def head(self, x4: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` from the level-4 output ``(B, 64, H/4, W/4)``: upsample x2, conv3x3 64->32,
        relu, upsample x2 (and to the image size), conv3x3 32->1.

        The last conv is computed without running it at full resolution: a 3x3 conv is the sum of its nine
        taps, each a 1x1 conv of the input shifted by one offset, and a 1x1 conv without bias commutes with
        bilinear resizing (both are linear, the resize's weights sum to 1). So the nine taps are computed on
        the 32-channel map at half resolution, only those 9 channels are upsampled, and the shifted taps
        are summed (zero outside, as the conv's padding). Same function up to float rounding (tested);
        on a CPU the second upsampling and the last conv were most of the head's time.
        """
        x = F.interpolate(x4, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.relu(self.head1(x))
        weight = self.head2.weight  # (1, 32, 3, 3)
        taps = F.conv2d(x, weight.permute(2, 3, 1, 0).reshape(9, weight.shape[1], 1, 1)).contiguous()  # (B, 9, h, w)
        taps = F.interpolate(taps, scale_factor=2.0, mode="bilinear", align_corners=False)
        taps = F.pad(resize(taps, image_size), (1, 1, 1, 1))
        height, width = image_size
        out = self.head2.bias.view(1, 1, 1, 1).expand(taps.shape[0], 1, height, width)
        for k in range(9):
            dy, dx = divmod(k, 3)
            out = out + taps[:, k:k + 1, dy:dy + height, dx:dx + width]
        return out

    def forward(self, features: tuple[torch.Tensor, ...], score: torch.Tensor, image_size) -> torch.Tensor:
        """Full refinement: features (f4, f8, f16, f32) with batch 1 or B, score ``(B, 1, h, w)`` -> logits."""
        f4, f8, f16, f32 = features
        r16, r32 = self.reduce_deep(f16, f32)
        r4, r8 = self.reduce_shallow(f4, f8)
        return self.shallow(self.deep(r16, r32, score), r4, r8, score, image_size)
