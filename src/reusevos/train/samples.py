"""Training samples for the refinement network, drawn from the cache: aligned crops of the four
feature maps, the target-model score and the ground-truth mask of one object in one frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reusevos.train.cache import LEVELS, CachedSequence

STRIDES = {"f4": 4, "f8": 8, "f16": 16, "f32": 32}


@dataclass
class Batch:
    features: tuple[torch.Tensor, ...]  # f4 (B, C4, S/4, S/4) ... f32 (B, C32, S/32, S/32)
    scores: torch.Tensor  # (B, 1, S/16, S/16)
    masks: torch.Tensor  # (B, 1, S, S) float 0/1


class RefinerSampler:
    """Draws crops of ``crop`` pixels (a multiple of 32, aligned to the stride-32 grid).

    A frame is drawn uniformly among frames that follow an anchor with a valid score; with
    probability ``focus`` the crop is centred near the object (random otherwise, so the network also
    sees crops of background and partial objects).
    """

    def __init__(self, sequences: list[CachedSequence], crop: int = 256, focus: float = 0.8):
        if crop % 32:
            raise ValueError("crop must be a multiple of 32")
        self.sequences = sequences
        self.crop = crop
        self.focus = focus
        # Every (sequence, anchor, object, frame) with a score, frame after the anchor.
        self.index = []
        for s, seq in enumerate(sequences):
            valid = ~np.isnan(np.asarray(seq.scores[:, :, :, 0, 0], dtype=np.float32))  # (A, T, K)
            for a, t, k in zip(*np.nonzero(valid)):
                if t > seq.anchors[a]:
                    self.index.append((s, int(a), int(t), int(k)))
        if not self.index:
            raise ValueError("the cache holds no frame with a score after its anchor")

    def __len__(self) -> int:
        return len(self.index)

    def draw(self, rng: np.random.Generator, batch: int) -> Batch:
        items = [self._crop(*self.index[rng.integers(len(self.index))], rng) for _ in range(batch)]
        feats = tuple(torch.from_numpy(np.stack([it[0][i] for it in items])).float() for i in range(4))
        scores = torch.from_numpy(np.stack([it[1] for it in items])).float()[:, None]
        masks = torch.from_numpy(np.stack([it[2] for it in items])).float()[:, None]
        return Batch(feats, scores, masks)

    def _crop(self, s: int, a: int, t: int, k: int, rng: np.random.Generator):
        seq = self.sequences[s]
        height, width = seq.masks.shape[1:]
        obj_id = seq.object_ids[k]
        mask = np.asarray(seq.masks[t]) == obj_id
        c = self.crop
        max_y, max_x = max(0, (height - c) // 32), max(0, (width - c) // 32)
        ys, xs = np.nonzero(mask)
        if len(ys) and rng.random() < self.focus:
            cy, cx = ys.mean() + rng.normal(0, c / 6), xs.mean() + rng.normal(0, c / 6)
            gy = int(np.clip(round((cy - c / 2) / 32), 0, max_y))
            gx = int(np.clip(round((cx - c / 2) / 32), 0, max_x))
        else:
            gy, gx = int(rng.integers(max_y + 1)), int(rng.integers(max_x + 1))
        feats = []
        for level in LEVELS:
            stride = STRIDES[level]
            n, y0, x0 = c // stride, gy * 32 // stride, gx * 32 // stride
            feats.append(_padded(seq.features[level][t], y0, x0, n))
        score = _padded(seq.scores[a, t, k][None], gy * 2, gx * 2, c // 16)[0]
        crop_mask = _padded(mask[None].astype(np.float32), gy * 32, gx * 32, c)[0]
        return feats, score, crop_mask


def _padded(array: np.ndarray, y0: int, x0: int, n: int) -> np.ndarray:
    """``array[:, y0:y0+n, x0:x0+n]`` as float32, zero-padded where the frame is smaller than the crop."""
    out = np.zeros((array.shape[0], n, n), np.float32)
    part = np.asarray(array[:, y0:y0 + n, x0:x0 + n], dtype=np.float32)
    out[:, : part.shape[1], : part.shape[2]] = part
    return out
