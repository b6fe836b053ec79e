"""Shared fixtures: the real shared data, the backbone with its ImageNet weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("REUSEVOS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BLACKSWAN = SHARED / "data" / "davis2016-blackswan"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def blackswan_root() -> Path:
    if not (BLACKSWAN / "JPEGImages").is_dir():
        pytest.skip(f"shared blackswan clip not found at {BLACKSWAN} (set REUSEVOS_SHARED)")
    return BLACKSWAN


@pytest.fixture(scope="session")
def blackswan(blackswan_root):
    """The first frames and masks of the real blackswan clip: lists of (H, W, 3) uint8 and (H, W) uint8."""
    from PIL import Image

    from reusevos.io.masks import read_mask

    frames = sorted((blackswan_root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))
    masks = sorted((blackswan_root / "Annotations" / "480p" / "blackswan").glob("*.png"))
    return [np.array(Image.open(p).convert("RGB")) for p in frames], [read_mask(p) for p in masks]


@pytest.fixture(scope="session")
def backbone():
    """MobileNetV2 with its verified ImageNet weights (the README's set-up command fetches them)."""
    from reusevos.model.backbone import load_backbone

    return load_backbone("mobilenet_v2", fetch=False)
