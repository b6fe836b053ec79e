"""TTVOS's light decoder: stride 16 to 8 to 4 to the image, with skip connections.

Each level keeps its width (``channels``) only inside the level and hands the next one a two-channel upsampled
map, which is what makes it light: the short-term feature at stride 16 is decoded, joined at stride 8 with the
long-term feature, at stride 4 with the backbone's f4, and the head upsamples the three levels' maps together
to one logit per pixel (a transposed convolution to stride 2, then a pixel shuffle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reusevos.model.short_term import conv_relu

COARSE = 2  # channels of the maps one level hands the next


def _up(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Twice the size (transposed convolution, kernel 4, stride 2)."""
    return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)


def _fit(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """``x`` cut to ``size``: the backbone rounds odd sizes up at each stride, so twice a level can be a pixel too
    big for the next one (854 px wide: f16 54, f8 107)."""
    return x[..., : size[0], : size[1]]


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # (B, 1, H, W)
    feature8: torch.Tensor  # (B, channels, H/8, W/8): the stride-8 level, for the template's weight and the transition


class TTVOSDecoder(nn.Module):
    """``forward``: the short-term feature ``(B, channels, H/16, W/16)``, the long-term feature
    ``(B, long_term_channels, H/8, W/8)``, f4 ``(1 or B, C4, H/4, W/4)`` and the image size -> logits
    ``(B, 1, H, W)`` and the stride-8 feature."""

    def __init__(self, channels: int, long_term_channels: int, f4_channels: int):
        super().__init__()
        self.up16 = _up(channels, COARSE)  # stride 16 -> 8
        self.long_term = conv_relu(long_term_channels, channels, 1)
        self.blend8 = conv_relu(channels + COARSE, channels, 3)
        self.up8 = _up(channels, COARSE)  # stride 8 -> 4
        self.up16_to4 = _up(COARSE, COARSE)  # the stride-16 map on to stride 4
        self.skip4 = conv_relu(f4_channels, channels, 1)
        self.blend4 = conv_relu(channels + COARSE, channels, 3)
        self.head = nn.Sequential(_up(channels + 2 * COARSE, 4), nn.PixelShuffle(2))  # stride 4 -> 2 -> 1

    def forward(self, short_term: torch.Tensor, long_term: torch.Tensor, f4: torch.Tensor,
                size: tuple[int, int]) -> DecoderOutput:
        out16 = _fit(self.up16(short_term), long_term.shape[-2:])
        feature8 = self.blend8(torch.cat([self.long_term(long_term), out16], dim=1))
        out8 = _fit(self.up8(feature8), f4.shape[-2:])
        skip = self.skip4(f4).expand(out8.shape[0], -1, -1, -1)
        feature4 = self.blend4(torch.cat([skip, out8], dim=1))
        out16 = _fit(self.up16_to4(out16), f4.shape[-2:])
        logits = self.head(torch.cat([out16, out8, feature4], dim=1))  # 4 x f4's size, never below the image's
        return DecoderOutput(_fit(logits, size), feature8)
