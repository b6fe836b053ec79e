"""reusevos: semi-supervised video object segmentation with a learned reuse gate.

The public API, in the order a script uses it::

    import reusevos

    model = reusevos.load_model()                  # shipped weights; device="auto" for a GPU
    session = reusevos.Session(model)              # one per video; SessionConfig picks variant and tau
    first = reusevos.read_mask("first.png")        # (H, W) uint8 label map, 0 = background
    for i, (name, frame) in enumerate(reusevos.open_frames("clip.mp4")):
        result = session.step(frame, first if i == 0 else None)
        reusevos.write_mask(f"out/{name}.png", result.labels)

or the whole command line in one call: ``reusevos.segment_video(model, "clip.mp4", "first.png", "out")``, which by
default also looks ahead (``reusevos.offline_config()``: results up to 2 frames late, fed by ``session.push`` and
``session.finish``).

Names are imported on first use, so ``import reusevos`` stays cheap (no torch) until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from reusevos.errors import ReusevosError

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_model": "reusevos.api",
    "resolve_device": "reusevos.api",
    "Session": "reusevos.session",
    "FrameResult": "reusevos.session",
    "SessionConfig": "reusevos.config",
    "offline_config": "reusevos.config",
    "VOSNetwork": "reusevos.model.network",
    "save_checkpoint": "reusevos.model.network",
    "open_frames": "reusevos.io.frames",
    "read_mask": "reusevos.io.masks",
    "write_mask": "reusevos.io.masks",
    "DAVIS_PALETTE": "reusevos.io.masks",
    "render_overlay": "reusevos.io.writers",
    "OverlayVideoWriter": "reusevos.io.writers",
    "segment_video": "reusevos.segment",
    "StartMasks": "reusevos.segment",
    "mask_from_box": "reusevos.start",
    "mask_from_points": "reusevos.start",
    "Prompt": "reusevos.start",
}

__all__ = ["ReusevosError", "__version__", *_EXPORTS]

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ imports lazily
    from reusevos.api import load_model, resolve_device
    from reusevos.config import SessionConfig, offline_config
    from reusevos.io.frames import open_frames
    from reusevos.io.masks import DAVIS_PALETTE, read_mask, write_mask
    from reusevos.io.writers import OverlayVideoWriter, render_overlay
    from reusevos.model.network import VOSNetwork, save_checkpoint
    from reusevos.segment import StartMasks, segment_video
    from reusevos.session import FrameResult, Session
    from reusevos.start import Prompt, mask_from_box, mask_from_points


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reusevos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
