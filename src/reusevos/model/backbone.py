"""The frozen ImageNet backbone, split at stride 8 so the reuse path can stop there.

``to_f8`` runs on every frame; ``f8_to_f32`` only on frames that take the full path.
Since it is never trained, its batch norms are folded into the convolutions before them, and it runs in
the channels-last memory format; together about twice as fast on a CPU for the same features up to
float rounding (tested). Its outputs are ordinary contiguous tensors.

Two families: torchvision's (MobileNetV2, the default, and ResNets) and EfficientNet-Lite0, Lite1 and Lite2
(:mod:`reusevos.model.efficientnet_lite`, weights converted from TensorFlow). Each normalises its input as its
ImageNet weights were trained (:class:`BackboneSpec`).

On a CPU it runs by default under ONNX Runtime when that is installed (``runtime``, see
:mod:`reusevos.model.onnx_backbone`): faster again in the frame loop (docs/speed.md), for the same features
up to float rounding. OpenVINO can run it instead, in float32 or bfloat16.
"""

from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from reusevos.errors import ReusevosError
from reusevos.model import efficientnet_lite, onnx_backbone
from reusevos.model.onnx_backbone import (RUNTIME_NAMES, GraphBackbone, OnnxBackbone, OnnxInt8Backbone,
                                          OpenVinoBackbone, check_runtime, int8_ranges)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    channels: tuple[int, int, int, int]  # f4, f8, f16, f32
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the input normalisation its weights expect, on [0, 1] images
    std: tuple[float, float, float] = IMAGENET_STD


SPECS = {
    "mobilenet_v2": BackboneSpec((24, 32, 96, 320)),
    "efficientnet_lite0": BackboneSpec((24, 40, 112, 320), efficientnet_lite.MEAN, efficientnet_lite.STD),
    "efficientnet_lite1": BackboneSpec((24, 40, 112, 320), efficientnet_lite.MEAN, efficientnet_lite.STD),
    "efficientnet_lite2": BackboneSpec((24, 48, 120, 352), efficientnet_lite.MEAN, efficientnet_lite.STD),
    "resnet18": BackboneSpec((64, 128, 256, 512)),
    "resnet50": BackboneSpec((256, 512, 1024, 2048)),
    "resnet101": BackboneSpec((256, 512, 1024, 2048)),
}


def images_to_tensor(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)`` numpy images as the backbone's input: float
    ``(N, 3, H, W)`` in [0, 1] on ``device`` (the one place frames become tensors)."""
    batch = torch.from_numpy(images if images.ndim == 4 else images[None])
    return batch.to(device).permute(0, 3, 1, 2).float().div_(255)


class Backbone(nn.Module):
    """Four feature maps of an ImageNet network, frozen and in eval mode.

    ``to_f8``: image ``(B, 3, H, W)`` in [0, 1] -> f4 ``(B, C4, H/4, W/4)``, f8 ``(B, C8, H/8, W/8)``.
    ``f8_to_f32``: f8 -> f16 ``(B, C16, H/16, W/16)``, f32 ``(B, C32, H/32, W/32)``.
    (Sizes round up: 854 px wide gives 214, 107, 54, 27.) The image is normalised here, with the mean and std
    that ``SPECS[name]`` gives for the network's ImageNet weights.

    ``runtime`` (``auto``, ``torch``, ``onnxruntime``, ``onnxruntime-int8``, ``openvino`` or ``openvino-bf16``, see
    :data:`reusevos.model.onnx_backbone.RUNTIMES`) says what runs these on float32 CPU tensors; other tensors
    always go through PyTorch.
    """

    def __init__(self, name: str = "mobilenet_v2", weights_path: str | None = None, runtime: str = "auto"):
        super().__init__()
        if name not in SPECS:
            raise ReusevosError(f"unknown backbone {name!r}; choose one of {', '.join(SPECS)}")
        self.name = name
        self.weights_path = weights_path
        spec = SPECS[name]
        self.channels = spec.channels
        self.stage4, self.stage8, self.stage16, self.stage32 = _stages(name, weights_path)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        _fold_batch_norms(self)
        self.to(memory_format=torch.channels_last)
        self._weights_sha256: str | None = None
        self._int8_calibration: dict | None = None  # read and checked once, when onnxruntime-int8 is first chosen
        self.runtime = runtime
        self._graphs: dict[str, bytes] = {}  # the parts exported to ONNX, shared by every runtime that runs them
        self._runners: dict[str, GraphBackbone] = {}  # runtime -> its compiled parts
        self._auto_failed = False  # the export or ONNX Runtime failed once under auto: PyTorch from then on

    @property
    def runtime(self) -> str:
        return self._runtime

    @runtime.setter
    def runtime(self, value: str) -> None:
        check_runtime(value)
        if value == "onnxruntime-int8":
            self._int8_ranges()  # refused here, with the reason, when none fit these weights
        self._runtime = value

    def weights_sha256(self) -> str | None:
        """The sha256 of the ImageNet weights file this backbone was built from (None: random weights)."""
        if self._weights_sha256 is None and self.weights_path is not None:
            digest = hashlib.sha256()
            with open(self.weights_path, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            self._weights_sha256 = digest.hexdigest()
        return self._weights_sha256

    def _int8_ranges(self) -> dict:
        if self._int8_calibration is None:
            self._int8_calibration = int8_ranges(self.name, self.weights_sha256())
        return self._int8_calibration

    def active_runtime(self, device: torch.device | str = "cpu") -> str:
        """What runs the backbone for float32 tensors on ``device``: ``torch``, or on a CPU ``onnxruntime``,
        ``onnxruntime-int8``, ``openvino`` or ``openvino-bf16``."""
        if torch.device(device).type != "cpu":
            return "torch"
        if self._runtime == "auto":
            return "onnxruntime" if not self._auto_failed and onnx_backbone.onnxruntime_available() else "torch"
        return self._runtime

    @contextmanager
    def runtime_as(self, runtime: str | None):
        """Run with ``runtime`` inside the block (None: leave it as it is)."""
        before = self._runtime
        if runtime is not None:
            self.runtime = runtime
        try:
            yield self
        finally:
            self._runtime = before

    def _runner(self, runtime: str) -> GraphBackbone:
        """The compiled parts of ``runtime`` (made when first asked for; the graphs are exported once for all)."""
        if runtime not in self._runners:
            if runtime == "onnxruntime":
                self._runners[runtime] = OnnxBackbone(self, self._graphs)
            elif runtime == "onnxruntime-int8":
                self._runners[runtime] = OnnxInt8Backbone(self, self._graphs, self._int8_ranges())
            else:
                self._runners[runtime] = OpenVinoBackbone(self, self._graphs, bf16=runtime == "openvino-bf16")
        return self._runners[runtime]

    def _graph_run(self, part: str, x: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The outputs of ``part`` on ``x`` from the runtime of the exported graphs when one should run it, else
        None (PyTorch runs it).

        If the export or the runtime fails, a runtime that was asked for by name raises a ReusevosError that says
        why; ``auto`` warns once and runs in PyTorch from then on."""
        runtime = self.active_runtime(x.device)
        if x.dtype != torch.float32 or runtime == "torch" or x.requires_grad:
            return None
        try:
            return self._runner(runtime).run(part, x)
        except Exception as exc:  # the exporter or the runtime lacks something this model or input needs
            reason = f"{type(exc).__name__}: {exc}"
            if self._runtime != "auto":
                instead = "onnxruntime" if runtime == "onnxruntime-int8" else "torch"
                raise ReusevosError(f"{RUNTIME_NAMES[runtime]} cannot run this backbone ({reason}); use the "
                                    f"{instead} runtime") from exc
            warnings.warn(f"{RUNTIME_NAMES[runtime]} cannot run this backbone ({reason}); it runs in PyTorch",
                          RuntimeWarning, stacklevel=3)
            self._auto_failed = True
            return None

    def train(self, mode: bool = True) -> "Backbone":
        # Never trained: batch-norm statistics stay ImageNet's even inside a training loop.
        return super().train(False)

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        return ((image - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def to_f8(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self._graph_run("to_f8", image)
        if outputs is not None:
            return outputs
        f4 = self.stage4(self._normalise(image))
        f8 = self.stage8(f4)
        return f4.contiguous(), f8.contiguous()

    def f8_to_f32(self, f8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self._graph_run("f8_to_f32", f8)
        if outputs is not None:
            return outputs
        f16 = self.stage16(f8.contiguous(memory_format=torch.channels_last))
        f32 = self.stage32(f16)
        return f16.contiguous(), f32.contiguous()

    def to_f16(self, image: torch.Tensor) -> torch.Tensor:
        """Only f16 (what a target model is fitted on), e.g. for the start frame's augmented copies."""
        outputs = self._graph_run("to_f16", image)
        if outputs is not None:
            return outputs[0]
        return self.stage16(self.stage8(self.stage4(self._normalise(image)))).contiguous()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f4, f8 = self.to_f8(image)
        f16, f32 = self.f8_to_f32(f8)
        return f4, f8, f16, f32


def _stages(name: str, weights_path: str | None) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """The ImageNet network ``name`` (its weights loaded strictly from ``weights_path``, if given) cut into the
    parts that end at f4, f8, f16 and f32."""
    state = None if weights_path is None else torch.load(weights_path, map_location="cpu", weights_only=True)
    if name in efficientnet_lite.VARIANTS:
        net = efficientnet_lite.EfficientNetLite(name)
        if state is not None:
            net.load_state_dict(efficientnet_lite.rename_state_dict(state), strict=True)
        b, (e4, e8, e16, e32) = net.blocks, efficientnet_lite.feature_blocks(name)
        return nn.Sequential(net.stem, *b[:e4]), b[e4:e8], b[e8:e16], b[e16:e32]
    net = getattr(torchvision.models, name)(weights=None)
    if state is not None:
        net.load_state_dict(state, strict=True)
    if name == "mobilenet_v2":
        f = net.features
        return f[:4], f[4:7], f[7:14], f[14:18]
    return (nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1), net.layer2, net.layer3,
            net.layer4)


def _fold_batch_norms(module: nn.Module) -> None:
    """Replace each (Conv2d, BatchNorm2d) pair of consecutive children by the equivalent convolution
    (eval-mode statistics) and an identity, recursively."""
    for child in module.children():
        _fold_batch_norms(child)
    children = list(module.named_children())
    for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
            setattr(module, norm_name, nn.Identity())


def load_backbone(name: str = "mobilenet_v2", fetch: bool = True) -> Backbone:
    """A backbone with its verified ImageNet weights (see ``reusevos.weights``)."""
    from reusevos.weights import backbone_weights

    return Backbone(name, str(backbone_weights(name, fetch=fetch)))
