"""The paper's "syn" training clips: objects cut from a training split's frames, pasted on another
frame of the split and moved by smooth affine motion (``reusevos.synthetic`` renders them)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from reusevos.io.davis import DavisDataset
from reusevos.io.frames import read_image
from reusevos.synthetic import Cutout, SyntheticConfig, cutouts_from_davis, generate_clip

SPEEDS = (0.5, 2.0, 6.0, 12.0)  # pixels per frame: slow clips (high consecutive IoU) to fast ones


@lru_cache(maxsize=2)
def _cutouts(root: str, split: str, sequences: tuple[str, ...]) -> tuple[Cutout, ...]:
    return tuple(cutouts_from_davis(root, split, sequences))


def syn_clip(dataset: DavisDataset, num_frames: int, seed: int,
             speeds: tuple[float, ...] = SPEEDS) -> tuple[list[np.ndarray], np.ndarray]:
    """One clip at the split's frame size: frames ``T x (H, W, 3)`` uint8 and labels ``(T, H, W)`` uint8.

    One to three objects from the split, a background frame from another place in the split, a speed
    drawn from ``speeds`` and sometimes a slow camera pan. Deterministic from ``seed`` (and ``speeds``).
    """
    rng = np.random.default_rng(seed)
    cutouts = _cutouts(str(dataset.root), dataset.split, tuple(dataset.sequences))
    sequence = dataset.sequences[int(rng.integers(len(dataset.sequences)))]
    paths = dataset.frame_paths(sequence)
    background = read_image(paths[int(rng.integers(len(paths)))])
    config = SyntheticConfig(
        size=background.shape[:2], num_frames=num_frames, num_objects=int(rng.integers(1, 4)),
        speed=float(rng.choice(speeds)), seed=int(rng.integers(2**31)),
        background_speed=float(rng.choice([0.0, 0.0, 1.0, 3.0])), object_size=(0.2, 0.6), cutout_fraction=1.0)
    clip = generate_clip(config, cutouts, background)
    frames, labels = zip(*clip)
    return list(frames), np.stack(labels)
