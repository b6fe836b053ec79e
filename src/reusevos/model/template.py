"""Template matching: how much has the target changed since the last computed frame?

The template is built once, at the object's start frame, from its stride-8 features and mask. At a
later frame the query (stride-8 features + the last computed score map) is matched against it; the
result D_t, a learned change feature, feeds the gate and the delta generator. No explicit
difference is computed: what "changed" means is learned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = 64


def _branch(in_channels: int, groups: int) -> nn.Sequential:
    """1x1 conv to 64 channels, then a 5x5 grouped conv and LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, CHANNELS, 1),
        nn.Conv2d(CHANNELS, CHANNELS, 5, padding=2, groups=groups),
        nn.LeakyReLU(0.2, inplace=True),
    )


class TemplateMatcher(nn.Module):
    """``template``: f8 ``(B, C8, H/8, W/8)`` + mask ``(B, 1, H/8, W/8)`` -> T ``(B, 64, 64)``.
    ``forward``: T, f8, S_prev ``(B, 1, H/16, W/16)`` -> D_t ``(B, 64, H/8, W/8)``.

    Underneath, both take f8 with ``guide_channels`` maps of guidance concatenated (``template_of`` and
    ``match``): the last mask or score here, TTVOS's coordinates and estimated masks in its template attention
    (``reusevos.model.template_attention``), the same module the paper's authors took from TTVOS.
    """

    def __init__(self, f8_channels: int, groups: int = 8, guide_channels: int = 1):
        super().__init__()
        inputs = f8_channels + guide_channels
        self.template_key = _branch(inputs, groups)
        self.template_value = _branch(inputs, groups)
        self.query_key = _branch(inputs, groups)
        self.query_feature = _branch(inputs, groups)
        self.blend = nn.Sequential(
            nn.Conv2d(2 * CHANNELS, 2 * CHANNELS, 5, padding=2, groups=groups),
            nn.Conv2d(2 * CHANNELS, CHANNELS, 1),
            nn.ReLU(inplace=True),
        )

    def template(self, f8: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The object's template: a 64x64 channel-affinity matrix, softmax-normalised per row."""
        mask = F.interpolate(mask, size=f8.shape[-2:], mode="area") if mask.shape[-2:] != f8.shape[-2:] else mask
        return self.template_of(torch.cat([f8, mask], dim=1))

    def template_of(self, guided: torch.Tensor) -> torch.Tensor:
        """T ``(B, 64, 64)`` from f8 and its guidance ``(B, C8 + guide_channels, H/8, W/8)``."""
        key = self.template_key(guided).flatten(2)  # (B, 64, HW)
        value = self.template_value(guided).flatten(2)
        return torch.softmax(value @ key.transpose(1, 2) / math.sqrt(key.shape[-1]), dim=-1)

    def forward(self, template: torch.Tensor, f8: torch.Tensor, score_prev: torch.Tensor) -> torch.Tensor:
        """The change feature D_t for ``B`` objects (``f8`` may have batch 1, shared by all objects)."""
        score = F.interpolate(score_prev, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        return self.match(template, torch.cat([f8.expand(score.shape[0], -1, -1, -1), score], dim=1))

    def match(self, template: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
        """T ``(B, 64, 64)`` applied to the query's key, blended with its feature: ``(B, 64, H/8, W/8)``."""
        key = self.query_key(guided)
        similarity = (template @ key.flatten(2)).view_as(key)
        return self.blend(torch.cat([similarity, self.query_feature(guided)], dim=1))
