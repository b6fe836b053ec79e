"""The DAVIS per-frame measures: J (region similarity) and F (boundary F-measure).

Both follow the official DAVIS 2017 evaluation toolkit (semi-supervised task) to the last
convention, so scores agree with published numbers:

- J is the IoU of the two binary masks; when both are empty J = 1.
- F compares one-pixel boundary maps (the seg2bmap rule of the Berkeley benchmark, boundaries shifted
  half a pixel towards the origin). A boundary pixel is matched when a boundary pixel of the other
  mask lies within ``ceil(0.008 * image diagonal)`` pixels, measured with a disk
  ``x^2 + y^2 <= r^2``. An empty predicted boundary has precision 1 and recall 0 (both 1 when the
  ground truth's is empty too); F = 0 when precision + recall = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np


BOUND_TH = 0.008
"""Boundary tolerance as a fraction of the image diagonal (values >= 1 are pixels)."""


def boundary_tolerance(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """The matching radius in pixels: ``ceil(bound_th * sqrt(H^2 + W^2))``, or ``bound_th`` if >= 1.

    480x854 frames give 8.
    """
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(np.ceil(bound_th * np.linalg.norm([height, width])))


def disk(radius: int) -> np.ndarray:
    """A ``(2r+1, 2r+1)`` uint8 disk: 1 where ``x^2 + y^2 <= r^2``."""
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J, the IoU of binary masks, over the last two axes.

    Args:
        gt, pred: ``(..., H, W)`` masks (non-zero = object), same shape.

    Returns:
        ``(...)`` float64 IoU; 1 where both masks are empty.
    """
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    inter = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a binary mask by the DAVIS seg2bmap rule, over the last two axes.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour
    (neighbours outside the image count as background); in the last row only the right neighbour
    is compared, in the last column only the lower one, and the bottom-right pixel is never on it.

    Args:
        seg: ``(..., H, W)`` mask, non-zero = object.

    Returns:
        ``(..., H, W)`` bool boundary map.
    """
    seg = np.asarray(seg).astype(bool, copy=False)
    here = seg[..., :-1, :-1]
    bmap = np.zeros(seg.shape, dtype=bool)
    bmap[..., :-1, :-1] = (here != seg[..., :-1, 1:]) | (here != seg[..., 1:, :-1]) | (here != seg[..., 1:, 1:])
    bmap[..., -1, :-1] = seg[..., -1, :-1] != seg[..., -1, 1:]
    bmap[..., :-1, -1] = seg[..., :-1, -1] != seg[..., 1:, -1]
    return bmap


def _f_from_counts(n_pred: int, n_gt: int, pred_matched: int, gt_matched: int) -> float:
    # The toolkit's conventions for empty boundaries.
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision, recall = pred_matched / n_pred, gt_matched / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _boundary_f_2d(gt: np.ndarray, pred: np.ndarray, kernel: np.ndarray) -> float:
    """F of two ``(H, W)`` bool masks, computed on the crop that holds both (same result, less work)."""
    x, y, w, h = cv2.boundingRect((gt | pred).view(np.uint8))
    if w == 0:
        return 1.0  # both empty: no boundary on either side
    height, width = gt.shape
    # One background pixel around the objects keeps seg2bmap identical to the full-image result
    # (boundaries sit on or up/left of object pixels); every boundary pixel lies in the crop, so the
    # dilation needs no more context.
    y0, y1 = max(y - 1, 0), min(y + h + 1, height)
    x0, x1 = max(x - 1, 0), min(x + w + 1, width)
    gt_b = boundary_map(gt[y0:y1, x0:x1])
    pred_b = boundary_map(pred[y0:y1, x0:x1])
    n_gt = int(np.count_nonzero(gt_b))
    n_pred = int(np.count_nonzero(pred_b))
    if n_gt == 0 or n_pred == 0:
        return _f_from_counts(n_pred, n_gt, 0, 0)
    gt_near = cv2.dilate(gt_b.view(np.uint8), kernel).view(bool)
    pred_near = cv2.dilate(pred_b.view(np.uint8), kernel).view(bool)
    pred_matched = int(np.count_nonzero(pred_b & gt_near))
    gt_matched = int(np.count_nonzero(gt_b & pred_near))
    return _f_from_counts(n_pred, n_gt, pred_matched, gt_matched)


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> np.ndarray | float:
    """F, the boundary F-measure of binary masks.

    Args:
        gt, pred: ``(H, W)`` or ``(T, H, W)`` masks (non-zero = object), same shape.
        bound_th: matching tolerance, a fraction of the diagonal (or pixels if >= 1).

    Returns:
        a float for ``(H, W)`` input, else a ``(T,)`` float64 array.
    """
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if gt.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W) or (T, H, W), got {gt.shape}")
    kernel = disk(boundary_tolerance(gt.shape[-2], gt.shape[-1], bound_th))
    if gt.ndim == 2:
        return _boundary_f_2d(gt, pred, kernel)
    return np.array([_boundary_f_2d(g, p, kernel) for g, p in zip(gt, pred)], dtype=np.float64)


def frame_scores(
    gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int], bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every object in one frame, from two label maps.

    Args:
        gt: ``(H, W)`` uint8 ground-truth labels (void already mapped to background).
        pred: ``(H, W)`` uint8 predicted labels.
        object_ids: the K object ids to score. An id absent from a map is an empty mask there;
            labels not listed count as background.

    Returns:
        ``(K,)`` J and ``(K,)`` F, float64, in the order of ``object_ids``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must be one (H, W) shape")
    if gt.dtype != np.uint8 or pred.dtype != np.uint8:
        raise ValueError(f"label maps must be uint8, got {gt.dtype} and {pred.dtype}")
    kernel = disk(boundary_tolerance(gt.shape[0], gt.shape[1], bound_th))
    j = np.ones(len(object_ids), dtype=np.float64)
    f = np.ones(len(object_ids), dtype=np.float64)
    for slot, obj in enumerate(object_ids):
        gt_obj = gt == obj
        pred_obj = pred == obj
        inter = np.count_nonzero(gt_obj & pred_obj)
        union = np.count_nonzero(gt_obj) + np.count_nonzero(pred_obj) - inter
        if union == 0:
            continue  # absent from both maps: J = F = 1
        j[slot] = inter / union
        f[slot] = _boundary_f_2d(gt_obj, pred_obj, kernel)
    return j, f
