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


def merged_labels(merged: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """The label map ``(H, W)`` uint8 of objects' merged probabilities ``(K, H, W)`` (``ids[k]``'s in row k, as
    :func:`merge` gives them, or a mean of such), the background taking what they leave, ``1 - sum``."""
    lookup = torch.tensor([0, *ids], dtype=torch.uint8, device=merged.device)
    return lookup[label_slots(torch.cat([1 - merged.sum(dim=0, keepdim=True), merged]))]


def merge(probs: torch.Tensor, ids: list[int], eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """The label map ``(H, W)`` uint8 (``ids[k]`` where object k wins, 0 where the background does) and the merged
    probabilities ``(K + 1, H, W)`` of :func:`soft_aggregate` for per-object probabilities ``probs`` ``(K, H, W)``,
    worked out only inside the box that holds every non-zero probability. Outside it every object's probability
    is 0, so every pixel there merges to the same numbers, those of a single zero pixel, and is background: the
    result is the whole frame's exactly, for the cost of the box (windowed and warped objects cover a part of it)."""
    if len(ids) != probs.shape[0] or not all(0 < i < 256 for i in ids):
        raise ValueError(f"give one object id from 1 to 255 per probability map; got {ids} for {probs.shape[0]} maps")
    lookup = torch.tensor([0, *ids], dtype=torch.uint8, device=probs.device)
    height, width = probs.shape[1:]
    rows = torch.nonzero(probs.amax(dim=(0, 2)) > 0) if len(ids) else probs.new_zeros((0, 1))
    cols = torch.nonzero(probs.amax(dim=(0, 1)) > 0) if len(ids) else probs.new_zeros((0, 1))
    if rows.numel() and int(rows[-1] - rows[0] + 1) * int(cols[-1] - cols[0] + 1) > 0.8 * height * width:
        merged = soft_aggregate(probs, eps)  # nearly the whole frame: the box would save nothing
        return lookup[label_slots(merged)], merged
    merged = soft_aggregate(probs.new_zeros((probs.shape[0], 1, 1)), eps).expand(-1, height, width).clone()
    labels = torch.zeros((height, width), dtype=torch.uint8, device=probs.device)
    if rows.numel():
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        inside = soft_aggregate(probs[(slice(None), *box)], eps)
        merged[(slice(None), *box)] = inside
        labels[box] = lookup[label_slots(inside)]
    return labels, merged
