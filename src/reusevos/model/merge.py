"""Merging per-object probabilities into one label map by soft aggregation."""

from __future__ import annotations

import torch


def soft_aggregate(probs: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-object foreground probabilities ``(K, H, W)`` -> merged probabilities ``(K + 1, H, W)``.

    Channel 0 is background: the least any object leaves as background, ``min_k (1 - p_k)``.
    All channels are then turned into odds ``p / (1 - p)`` and normalised to sum one per pixel,
    so objects compete where they overlap. :func:`label_slots` gives the winning channel per pixel.
    """
    if probs.shape[0] == 0:
        return torch.ones((1,) + tuple(probs.shape[1:]), dtype=probs.dtype, device=probs.device)
    background = (1 - probs).min(dim=0, keepdim=True).values
    stacked = torch.cat([background, probs], dim=0).clamp(eps, 1 - eps)
    odds = stacked / (1 - stacked)
    return odds / odds.sum(dim=0, keepdim=True)


def label_slots(merged: torch.Tensor) -> torch.Tensor:
    """The winning channel of merged probabilities ``(K + 1, H, W)`` per pixel, ``(H, W)`` int64; ties go to
    the lower channel, as with ``argmax``. ``max(dim=0)`` is used because on CPU ``argmax`` over the
    leading dimension is far slower."""
    return merged.max(dim=0).indices
