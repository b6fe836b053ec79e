"""Long-term matching (TTVOS): the adaptive template attention module.

The template is a per-object summary of the target's appearance: the 64x64 channel affinity T of key and value
maps computed from f8, the pixel coordinates and the object's estimated masks (the same template matching the
reuse gate uses, :class:`reusevos.model.template.TemplateMatcher`, with other guidance). Each frame, the query
(this frame's f8 with the masks of the last frames) attends to T, which brings back the target's details and
copes with shape changes. After the frame is segmented, a template built from it and its estimate is blended
in, ``T_t = (T_{t-1} + w T_new) / (1 + w)``, with a weight w in (0, 1) predicted from the decoder's stride-8
feature: adaptive, so a doubtful frame can change the template little. ``TtvosConfig.update_floor`` (ours) keeps
w above a floor: trained on short snippets, w otherwise falls to 0 and the template stays the first frame's.
"""

from __future__ import annotations

import torch
from torch import nn

from reusevos.model.template import CHANNELS, TemplateMatcher

COORDINATES = 3  # x, y and the distance from the centre


def coordinates(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel positions ``(1, 3, height, width)``: x and y in [-1, 1] and the distance from the centre, so the
    matching knows where a feature is (attention alone is blind to position)."""
    y = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype).view(height, 1).expand(height, width)
    x = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype).view(1, width).expand(height, width)
    return torch.stack([x, y, torch.sqrt(x * x + y * y)])[None]


class TemplateAttention(nn.Module):
    """``template``: f8 ``(1 or B, C8, H/8, W/8)`` and masks ``(B, history, H/8, W/8)`` -> T ``(B, 64, 64)``.
    ``forward``: T, f8 and the last frames' masks -> the long-term feature ``(B, 64, H/8, W/8)``.
    ``update_weight``: the decoder's stride-8 feature ``(B, decoder_channels, H/8, W/8)`` -> w ``(B,)``.
    """

    def __init__(self, f8_channels: int, history: int, decoder_channels: int, floor: float = 0.0):
        super().__init__()
        self.floor = floor  # w's least value (0: the paper's sigmoid as it is)
        self.matcher = TemplateMatcher(f8_channels, guide_channels=COORDINATES + history)
        self.weight = nn.Sequential(
            nn.Conv2d(decoder_channels, decoder_channels // 2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(decoder_channels // 2, 1, 1), nn.Sigmoid())

    @property
    def channels(self) -> int:
        return CHANNELS

    def _guided(self, f8: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        batch = masks.shape[0]
        where = coordinates(*f8.shape[-2:], f8).expand(batch, -1, -1, -1)
        return torch.cat([f8.expand(batch, -1, -1, -1), where, masks], dim=1)

    def template(self, f8: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.matcher.template_of(self._guided(f8, masks))

    def forward(self, template: torch.Tensor, f8: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.matcher.match(template, self._guided(f8, masks))

    def update_weight(self, feature8: torch.Tensor) -> torch.Tensor:
        w = self.weight(feature8).flatten()
        return self.floor + (1.0 - self.floor) * w if self.floor else w

    @staticmethod
    def update(template: torch.Tensor, new: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(T + w T_new) / (1 + w)`` per object: T, T_new ``(B, 64, 64)``, w ``(B,)``."""
        w = weight.view(-1, 1, 1)
        return (template + w * new) / (1 + w)
