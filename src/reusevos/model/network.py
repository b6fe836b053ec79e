"""The assembled network and its checkpoints.

A checkpoint holds only the trained modules (never the frozen backbone, whose ImageNet weights come
from ``reusevos.weights``), the model configuration (``ModelConfig.base`` says which base model: FRTM or
TTVOS), and free-form metadata (how it was trained). Loading is strict: a missing, extra or mis-shaped tensor
is an error.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reusevos.config import BASE_MODELS, ModelConfig
from reusevos.errors import ReusevosError
from reusevos.model.backbone import SPECS, Backbone
from reusevos.model.delta import DeltaGenerator
from reusevos.model.gate import Gate
from reusevos.model.onnx_backbone import cpu_computes_bf16
from reusevos.model.refiner import Refiner
from reusevos.model.template import TemplateMatcher
from reusevos.model.translator import RefineTranslator
from reusevos.model.ttvos import TTVOS

CHECKPOINT_FORMAT = "reusevos-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "default.pt"
SHIPPED = {"frtm": DEFAULT_CHECKPOINT, "ttvos": CHECKPOINTS / "ttvos.pt",
           "frtm-mobilenet_v2": CHECKPOINTS / "frtm-mobilenet_v2.pt"}
"""The weights shipped with the package, by the name ``load_model`` takes: each base model's (``frtm``, the
default, on EfficientNet-Lite0; ``ttvos``), and the FRTM default before it (``frtm-mobilenet_v2``: on MobileNetV2,
5.6 J&F lower on DAVIS 2016 val and 4-11% faster; the weights of the ablation and speed pages up to issue 17)."""


class VOSNetwork(nn.Module):
    """Backbone (frozen) + the base model's trained modules: FRTM's refinement network or TTVOS
    (``config.base == "ttvos"``), and with ``config.reuse_gate`` the reuse-path modules on it (G-FRTM, G-TTVOS).

    The per-object state (FRTM's target models, TTVOS's memories) lives in the session.
    """

    def __init__(self, config: ModelConfig | None = None, backbone: Backbone | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        if self.config.backbone not in SPECS:
            raise ReusevosError(f"unknown backbone {self.config.backbone!r}; choose one of {', '.join(SPECS)}")
        if self.config.base not in BASE_MODELS:
            raise ReusevosError(f"unknown base model {self.config.base!r}; choose one of {', '.join(BASE_MODELS)}")
        self.backbone = backbone if backbone is not None else Backbone(self.config.backbone)
        if self.config.base == "ttvos":
            self.ttvos = TTVOS(self.backbone.channels, self.config.ttvos)
            state_channels = self.config.ttvos.channels  # R: the short-term feature the decoder starts from
        else:
            self.refiner = Refiner(self.backbone.channels, self.config.refine_channels)
            state_channels = self.config.refine_channels  # R: the deep refinement levels' output
        if self.config.reuse_gate:  # the same reuse-path modules on either base model (G-FRTM, G-TTVOS)
            self.matcher = TemplateMatcher(self.backbone.channels[1])
            self.gate = Gate()
            self.delta = DeltaGenerator()
            self.translator = RefineTranslator(state_channels)

    @property
    def base(self) -> str:
        """The base model these weights hold: ``frtm`` or ``ttvos``."""
        return self.config.base

    @property
    def has_gate(self) -> bool:
        return self.config.reuse_gate

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device  # the frozen backbone's: every module moves together

    def refiner_precision(self) -> AbstractContextManager:
        """The context FRTM's refinement network runs in at test time: PyTorch's bfloat16 autocast when the
        backbone runs in OpenVINO bf16 on a CPU that computes bfloat16 natively (the bfloat16 mode: both heavy
        networks in bfloat16, docs/speed.md "The bfloat16 mode"), else nothing (float32). Its outputs are then bfloat16:
        callers convert what leaves it. Decided at each call, as the backbone's runtime is."""
        device = self.device
        bf16 = (device.type == "cpu" and self.backbone.active_runtime(device) == "openvino-bf16"
                and cpu_computes_bf16())
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The trained modules' tensors (everything but the backbone)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def load_trained_state(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        expected = self.trained_state()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
        if missing or extra or wrong:
            detail = "; ".join(
                f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys)
            raise ReusevosError(f"{source} does not fit this model ({detail}); use a checkpoint written by "
                                "`reusevos train` for the same backbone")
        self.load_state_dict({**state, **{k: v for k, v in self.state_dict().items() if k.startswith("backbone.")}},
                             strict=True)


def save_checkpoint(path: str | os.PathLike, network: VOSNetwork, meta: dict[str, Any] | None = None,
                    half: bool = False) -> None:
    """Write the trained modules atomically. ``half`` stores float16 (the shipped default is small)."""
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in network.trained_state().items()}
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "config": network.config.to_dict(), "state_dict": state, "meta": meta or {}}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint file; any problem is a ReusevosError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ReusevosError(f"weights file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ReusevosError(f"cannot read weights file {path} ({type(exc).__name__}); it is damaged or not a "
                            "reusevos checkpoint: download or train it again") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ReusevosError(f"{path} is not a reusevos checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ReusevosError(f"{path} has checkpoint version {payload.get('version')}; this reusevos reads "
                            f"version {CHECKPOINT_VERSION}")
    return payload


def shipped_weights(model: str) -> Path:
    """The weights file shipped under the name ``model`` (a key of :data:`SHIPPED`)."""
    if model not in SHIPPED:
        raise ReusevosError(f"unknown model {model!r}; choose one of {', '.join(SHIPPED)} (or give a weights file)")
    path = SHIPPED[model]
    if not path.is_file():
        if model == "ttvos":
            raise ReusevosError(f"the TTVOS weights are missing from the package ({path}); reinstall reusevos, or "
                                "train them with `reusevos train --model ttvos` and pass --weights OUT/ttvos.pt")
        what = "default" if model == "frtm" else model
        raise ReusevosError(f"the {what} weights are missing from the package ({path}); reinstall reusevos "
                            "or pass --weights FILE")
    return path


def _shipped_model(name: str) -> tuple[str, str]:
    """The base model and backbone of the weights shipped as ``name`` (read from the file)."""
    config = read_checkpoint(shipped_weights(name))["config"]
    return config.get("base", ModelConfig.base), config.get("backbone", ModelConfig.backbone)


def shipped_backbones() -> tuple[str, ...]:
    """The backbones the shipped models run on (read from their files), in the order of :data:`SHIPPED`."""
    return tuple(dict.fromkeys(_shipped_model(name)[1] for name in SHIPPED))


def shipped_on(backbone: str, base: str = "frtm") -> list[str]:
    """The names of the shipped weights that hold ``base`` on ``backbone``, in the order of :data:`SHIPPED`."""
    return [name for name in SHIPPED if _shipped_model(name) == (base, backbone)]


def load_model(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               fetch_backbone: bool = True, model: str | None = None) -> VOSNetwork:
    """The network with trained weights, in eval mode.

    ``weights``: a checkpoint file, or the name of shipped weights (a key of :data:`SHIPPED`: ``frtm``, ``ttvos``,
    ``frtm-mobilenet_v2``); None: the shipped FRTM weights (or those of ``model``). ``model``: the base model the
    weights must hold (None: whichever they hold). The backbone's ImageNet weights are found (or fetched, if allowed) by
    ``reusevos.weights``.
    """
    from reusevos.weights import backbone_weights

    named = weights is None or str(weights) in SHIPPED
    path = shipped_weights(str(weights) if weights is not None else model or "frtm") if named else Path(weights)
    payload = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ReusevosError(f"{path} has an unreadable model configuration: {exc}") from exc
    if model is not None and config.base != model:
        raise ReusevosError(f"{path} holds a {config.base} model, not {model}; give {model} weights or drop the "
                            "model's name")
    backbone = Backbone(config.backbone, str(backbone_weights(config.backbone, fetch=fetch_backbone)))
    network = VOSNetwork(config, backbone)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    network.load_trained_state(state, source=str(path))
    network.meta = payload.get("meta", {})
    network.weights_file = str(path)
    return network.to(device).eval()
