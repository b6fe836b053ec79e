"""The few functions the public API adds on top of the modules it re-exports (see ``reusevos/__init__.py``).

Device choice is explicit: the library never picks a device unless asked to with ``device="auto"``.
"""

from __future__ import annotations

import os

import torch

from reusevos.errors import ReusevosError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """The torch device for ``name``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    A device this machine does not have is a ReusevosError, never a silent fall-back to the CPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind not in DEVICES[1:] or (index and not (kind == "cuda" and index.isdigit())):
        raise ReusevosError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ReusevosError(f"--device {text}: this machine has no usable CUDA GPU (or this torch build has no "
                                "CUDA support); use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise ReusevosError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not _mps_available():
        raise ReusevosError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto")
    return torch.device(text)


def load_model(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               fetch_backbone: bool = True, model: str | None = None):
    """The network with trained weights, in eval mode, on ``device`` (``"auto"`` allowed, see :func:`resolve_device`).

    ``weights`` is a checkpoint file (from ``reusevos train``) or a base model's name, ``"frtm"`` or ``"ttvos"``,
    for the weights shipped for it; None loads the default shipped with the package (FRTM's). ``model``, when
    given, is the base model the weights must hold. The backbone's ImageNet weights are found, or fetched if
    ``fetch_backbone``, by ``reusevos.weights``. Returns a :class:`reusevos.model.network.VOSNetwork`; its
    ``base`` says which base model it is, its ``meta`` dict how it was trained.
    """
    from reusevos.model import network

    return network.load_model(weights, device=resolve_device(device), fetch_backbone=fetch_backbone, model=model)
