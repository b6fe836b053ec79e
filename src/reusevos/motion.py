"""The motion variant's cheap step (ours): move the last output by the object's motion instead of refining.

On a CPU the paper's reuse path keeps what is expensive (the shallow refinement levels); copying the last
mask costs almost nothing but lets it lag behind a moving object. In between: estimate the object's
translation between the previous frame and this one by phase correlation on small grey images (around the
object, so a camera pan and other objects matter less), and shift the last output by it. A few
milliseconds a frame; the gate still decides which frames may take it.
"""

from __future__ import annotations

import cv2
import numpy as np

from reusevos.flow import grey_at

SCALE = 4  # the grey images are a quarter of the frame's size
MIN_SIDE = 16  # a box smaller than this (in the small image) is too little to correlate: the whole image is used
MARGIN = 8  # pixels of the small image around the object's box


def small_grey(frame: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB frame as a float32 grey image at 1/:data:`SCALE` of its size."""
    return grey_at(frame, SCALE).astype(np.float32)


def object_box(prob: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` in an image of ``shape`` (the small one) around ``prob > 0.5`` (full size), grown by
    :data:`MARGIN`; None when nothing is above 0.5 or the box is too small to correlate."""
    rows = np.flatnonzero((prob > 0.5).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((prob > 0.5).any(axis=0))
    fy, fx = shape[0] / prob.shape[0], shape[1] / prob.shape[1]
    y0, y1 = max(int(rows[0] * fy) - MARGIN, 0), min(int(rows[-1] * fy) + 1 + MARGIN, shape[0])
    x0, x1 = max(int(cols[0] * fx) - MARGIN, 0), min(int(cols[-1] * fx) + 1 + MARGIN, shape[1])
    if y1 - y0 < MIN_SIDE or x1 - x0 < MIN_SIDE:
        return None
    return y0, y1, x0, x1


def translation(previous: np.ndarray, current: np.ndarray, box: tuple[int, int, int, int] | None) -> tuple[float, float]:
    """``(dy, dx)`` in pixels of the small images by which the content of ``box`` moved from ``previous`` to
    ``current`` (phase correlation with a Hann window; the whole image when ``box`` is None)."""
    if box is not None:
        y0, y1, x0, x1 = box
        previous, current = previous[y0:y1, x0:x1], current[y0:y1, x0:x1]
    if min(previous.shape) < 2:
        return 0.0, 0.0
    window = cv2.createHanningWindow((previous.shape[1], previous.shape[0]), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(np.ascontiguousarray(previous), np.ascontiguousarray(current), window)
    return float(dy), float(dx)


def shifted(prob: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``prob`` ``(H, W)`` float32 moved by ``(dy, dx)`` pixels (bilinear; zero where it moved in from outside)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(prob, matrix, (prob.shape[1], prob.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def moved_output(prob: np.ndarray, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The last output ``prob`` (full size) moved by the object's translation between the small grey images."""
    dy, dx = translation(previous, current, object_box(prob, previous.shape))
    return shifted(prob, dy * prob.shape[0] / previous.shape[0], dx * prob.shape[1] / previous.shape[1])
