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
        mask = np.asarray(seq.masks[t]) == seq.object_ids[k]
        gy, gx = crop_origin(mask, self.crop, self.focus, rng)
        return crop_frame(seq, a, t, k, gy, gx, self.crop)


def crop_origin(mask: np.ndarray, crop: int, focus: float, rng: np.random.Generator) -> tuple[int, int]:
    """A crop's top-left corner in units of 32 pixels: near the object with probability ``focus``."""
    height, width = mask.shape
    max_y, max_x = max(0, (height - crop) // 32), max(0, (width - crop) // 32)
    ys, xs = np.nonzero(mask)
    if len(ys) and rng.random() < focus:
        cy, cx = ys.mean() + rng.normal(0, crop / 6), xs.mean() + rng.normal(0, crop / 6)
        return (int(np.clip(round((cy - crop / 2) / 32), 0, max_y)),
                int(np.clip(round((cx - crop / 2) / 32), 0, max_x)))
    return int(rng.integers(max_y + 1)), int(rng.integers(max_x + 1))


def crop_frame(seq: CachedSequence, a: int, t: int, k: int, gy: int, gx: int, crop: int):
    """Features (f4, f8, f16, f32), score and mask of object ``k`` in frame ``t``, cropped at (gy, gx) * 32."""
    feats = []
    for level in LEVELS:
        stride = STRIDES[level]
        feats.append(_padded(seq.features[level][t], gy * 32 // stride, gx * 32 // stride, crop // stride))
    score = _padded(seq.scores[a, t, k][None], gy * 2, gx * 2, crop // 16)[0]
    mask = (np.asarray(seq.masks[t]) == seq.object_ids[k]).astype(np.float32)
    return feats, score, _padded(mask[None], gy * 32, gx * 32, crop)[0]


def _padded(array: np.ndarray, y0: int, x0: int, n: int) -> np.ndarray:
    """``array[:, y0:y0+n, x0:x0+n]`` as float32, zero-padded where the frame is smaller than the crop."""
    out = np.zeros((array.shape[0], n, n), np.float32)
    part = np.asarray(array[:, y0:y0 + n, x0:x0 + n], dtype=np.float32)
    out[:, : part.shape[1], : part.shape[2]] = part
    return out


@dataclass
class SnippetBatch:
    """``L`` frames of ``B`` snippets, in time order: each tensor is ``(L, B, ...)``."""

    features: tuple[torch.Tensor, ...]  # f4 ... f32, (L, B, C, S/stride, S/stride)
    scores: torch.Tensor  # (L, B, 1, S/16, S/16): the full path's target-model scores
    masks: torch.Tensor  # (L, B, 1, S, S)


class SnippetSampler:
    """Snippets of ``length`` frames of one object, in time order with random gaps, one crop for all
    frames. Each snippet's largest gap is drawn from ``max_gaps`` so slow and fast changes both occur
    (the gate must see frames worth reusing and frames that are not)."""

    def __init__(self, sequences: list[CachedSequence], length: int = 6, crop: int = 256,
                 max_gaps: tuple[int, ...] = (1, 2, 4, 8), focus: float = 0.8):
        self.sequences, self.length, self.crop = sequences, length, crop
        self.max_gaps, self.focus = max_gaps, focus
        self.index = []  # (sequence, object, first frame with a score from the updated anchor)
        for s, seq in enumerate(sequences):
            valid = ~np.isnan(np.asarray(seq.scores[0, :, :, 0, 0], dtype=np.float32))  # (T, K)
            for k in range(valid.shape[1]):
                frames = np.nonzero(valid[:, k])[0]
                if len(frames) >= length:
                    self.index.append((s, k, int(frames[0])))
        if not self.index:
            raise ValueError(f"no sequence has {length} frames with scores")

    def __len__(self) -> int:
        return len(self.index)

    def draw(self, rng: np.random.Generator, batch: int) -> SnippetBatch:
        items = [self._snippet(*self.index[rng.integers(len(self.index))], rng) for _ in range(batch)]
        feats = tuple(torch.from_numpy(np.stack([[f[0][i] for f in it] for it in items], axis=1)).float()
                      for i in range(4))
        scores = torch.from_numpy(np.stack([[f[1] for f in it] for it in items], axis=1)).float()[:, :, None]
        masks = torch.from_numpy(np.stack([[f[2] for f in it] for it in items], axis=1)).float()[:, :, None]
        return SnippetBatch(feats, scores, masks)

    def _snippet(self, s: int, k: int, first: int, rng: np.random.Generator):
        seq = self.sequences[s]
        span = seq.num_frames - first
        max_gap = max(1, min(int(rng.choice(self.max_gaps)), (span - 1) // (self.length - 1)))
        gaps = rng.integers(1, max_gap + 1, size=self.length - 1)
        start = first + int(rng.integers(span - int(gaps.sum())))
        frames = start + np.concatenate([[0], np.cumsum(gaps)])
        mask0 = np.asarray(seq.masks[frames[0]]) == seq.object_ids[k]
        gy, gx = crop_origin(mask0, self.crop, self.focus, rng)
        return [crop_frame(seq, 0, int(t), k, gy, gx, self.crop) for t in frames]
