"""TTVOS, the second base model (Park, Venkatesh and Kwak, "TTVOS: Lightweight Video Object Segmentation with
Adaptive Template Attention Module and Temporal Consistency Loss", arXiv 2011.04445), on our frozen backbone.

Per frame and object: short-term matching against the previous frame's feature and estimated masks
(:mod:`reusevos.model.short_term`), long-term matching through the adaptive template attention module
(:mod:`reusevos.model.template_attention`), and the light decoder (:mod:`reusevos.model.ttvos_decoder`) to a
full-resolution logit map. Then the object's memory moves on: the new estimate joins the mask history, this
frame's feature becomes the previous one, the template takes in this frame. Nothing is optimised at test time
(FRTM fits a target model per object; TTVOS only runs forward).

The transition head predicts, at stride 8, how the mask changes from the previous frame's estimate to this
frame's truth; only the temporal consistency loss reads it (:func:`reusevos.train.losses.temporal_consistency_loss`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from reusevos.config import TtvosConfig
from reusevos.model.short_term import ShortTermMatcher, conv_relu
from reusevos.model.template_attention import TemplateAttention
from reusevos.model.ttvos_decoder import TTVOSDecoder


@dataclass
class TTVOSMemory:
    """What TTVOS keeps of ``B`` objects between frames: a row per object in each tensor."""

    template: torch.Tensor  # T (B, 64, 64)
    masks8: torch.Tensor  # estimated masks of the last frames, newest first, (B, history, H/8, W/8)
    masks16: torch.Tensor  # the same at stride 16, (B, history, H/16, W/16)
    feature16: torch.Tensor  # the last frame's stride-16 feature, (B, feature_channels, H/16, W/16)

    def rows(self) -> list["TTVOSMemory"]:
        """One memory per object (views, no copies)."""
        return [TTVOSMemory(*(t[i:i + 1] for t in self._tensors())) for i in range(self.template.shape[0])]

    @staticmethod
    def stack(memories: list["TTVOSMemory"]) -> "TTVOSMemory":
        """The memories of several objects as one batch, in order."""
        return TTVOSMemory(*(torch.cat(parts) for parts in zip(*(m._tensors() for m in memories))))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.template, self.masks8, self.masks16, self.feature16


@dataclass
class TTVOSOutput:
    logits: torch.Tensor  # (B, 1, H, W)
    update_weight: torch.Tensor  # w (B,): how much of this frame the template takes in
    transition: torch.Tensor  # (B, 1, H/8, W/8) in (-1, 1): predicted y_t - y_hat_{t-1}
    short: torch.Tensor  # the short-term feature decoded, (B, channels, H/16, W/16): G-TTVOS's R


class TTVOS(nn.Module):
    """The trained part of TTVOS for a backbone with ``channels`` (C4, C8, C16, C32).

    ``frame_feature``: f16 ``(N, C16, H/16, W/16)`` and f32 ``(N, C32, H/32, W/32)`` -> x16
    ``(N, feature_channels, H/16, W/16)``, once per frame for all objects.
    ``start``: f8 ``(1, C8, H/8, W/8)``, x16 and the given masks ``(B, 1, H, W)`` -> the memory of ``B`` objects.
    ``forward``: memory, f4 ``(1 or B, C4, H/4, W/4)``, f8, x16, image size -> :class:`TTVOSOutput`: ``short_term``
    then ``decode``. G-TTVOS's reuse path calls ``decode`` with a translated short-term feature instead, so a reused
    frame needs neither x16 nor the backbone past stride 8.
    ``remember``: memory, w, f8, x16 and this frame's estimates ``(B, 1, H, W)`` in [0, 1] -> the next memory.
    """

    def __init__(self, channels: tuple[int, int, int, int], config: TtvosConfig | None = None):
        super().__init__()
        self.config = config = config or TtvosConfig()
        c4, c8, c16, c32 = channels
        self.reduce16 = conv_relu(c16 + c32, config.feature_channels, 1)
        self.short_term = ShortTermMatcher(config.feature_channels, config.history, config.channels)
        self.long_term = TemplateAttention(c8, config.history, config.channels, config.update_floor)
        self.decoder = TTVOSDecoder(config.channels, self.long_term.channels, c4)
        self.transition = nn.Sequential(nn.Conv2d(config.channels, 1, 3, padding=1), nn.Tanh())

    def frame_feature(self, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        # f32 joins at stride 16: MobileNetV2's deepest, most semantic level, where TTVOS's dilated ResNet ends
        up = F.interpolate(f32, size=f16.shape[-2:], mode="bilinear", align_corners=False)
        return self.reduce16(torch.cat([f16, up], dim=1))

    def start(self, f8: torch.Tensor, feature16: torch.Tensor, masks: torch.Tensor) -> TTVOSMemory:
        # Every history slot holds the given mask: as if the object had stood still before its start frame.
        history = self.config.history
        masks8 = F.adaptive_avg_pool2d(masks, f8.shape[-2:]).expand(-1, history, -1, -1)
        masks16 = F.adaptive_avg_pool2d(masks, feature16.shape[-2:]).expand(-1, history, -1, -1)
        return TTVOSMemory(self.long_term.template(f8, masks8), masks8, masks16,
                           feature16.expand(masks.shape[0], -1, -1, -1))

    def forward(self, memory: TTVOSMemory, f4: torch.Tensor, f8: torch.Tensor, feature16: torch.Tensor,
                size: tuple[int, int], timed: Callable[[str], ContextManager] = lambda part: nullcontext()
                ) -> TTVOSOutput:
        """``timed(part)`` wraps each part (``short_term``, ``long_term``, ``decoder``): the session's stage timer."""
        with timed("short_term"):
            short = self.short_term_feature(memory, feature16)
        return self.decode(memory, short, f4, f8, size, timed)

    def short_term_feature(self, memory: TTVOSMemory, feature16: torch.Tensor) -> torch.Tensor:
        """Short-term matching of x16 against the memory's last frame: ``(B, channels, H/16, W/16)``."""
        return self.short_term(feature16, memory.feature16, memory.masks16)

    def decode(self, memory: TTVOSMemory, short: torch.Tensor, f4: torch.Tensor, f8: torch.Tensor,
               size: tuple[int, int], timed: Callable[[str], ContextManager] = lambda part: nullcontext()
               ) -> TTVOSOutput:
        """Long-term matching and the decoder from a short-term feature ``short`` (computed or translated)."""
        with timed("long_term"):
            long = self.long_term(memory.template, f8, memory.masks8)
        with timed("decoder"):
            decoded = self.decoder(short, long, f4, size)
            weight, transition = self.long_term.update_weight(decoded.feature8), self.transition(decoded.feature8)
        return TTVOSOutput(decoded.logits, weight, transition, short)

    def remember(self, memory: TTVOSMemory, update_weight: torch.Tensor, f8: torch.Tensor,
                 feature16: torch.Tensor, estimates: torch.Tensor) -> TTVOSMemory:
        masks8 = torch.cat([F.adaptive_avg_pool2d(estimates, f8.shape[-2:]), memory.masks8[:, :-1]], dim=1)
        masks16 = torch.cat([F.adaptive_avg_pool2d(estimates, feature16.shape[-2:]), memory.masks16[:, :-1]], dim=1)
        template = self.long_term.update(memory.template, self.long_term.template(f8, masks8), update_weight)
        return TTVOSMemory(template, masks8, masks16, feature16.expand(estimates.shape[0], -1, -1, -1))
