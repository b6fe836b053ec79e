"""First-frame augmentation for the target model: the object cut out, the hole inpainted, the object
warped (rotated, flipped, scaled, blurred) and pasted back. Gives the target model views of the
object it will meet later without any extra annotation.
"""

from __future__ import annotations

import cv2
import numpy as np

# One warp per augmented copy, cycled: (rotation degrees, horizontal flip, scale, blur sigma).
_WARPS = (
    (10.0, False, 1.0, 0.0),
    (0.0, True, 1.0, 0.0),
    (-8.0, False, 0.85, 0.0),
    (0.0, False, 1.15, 1.5),
    (-15.0, True, 0.95, 0.0),
    (5.0, False, 1.05, 2.0),
)


def inpaint_background(image: np.ndarray, mask: np.ndarray, work_size: int = 240) -> np.ndarray:
    """The image with the masked object removed: ``(H, W, 3)`` uint8.

    OpenCV's Telea inpainting runs at reduced size (its cost grows with the hole's area) and only
    the hole is taken from the upscaled result.
    """
    h, w = mask.shape
    scale = min(1.0, work_size / max(h, w))
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small_image = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    hole = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8))
    small_hole = cv2.resize(hole, small_size, interpolation=cv2.INTER_NEAREST)
    small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small_image, small_hole, 5, cv2.INPAINT_TELEA)
    filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    out = image.copy()
    out[hole > 0] = filled[hole > 0]
    return out


def augment_first_frame(image: np.ndarray, mask: np.ndarray, count: int,
                        scales: tuple[float, ...] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` augmented copies of ``(image (H, W, 3) uint8, mask (H, W) bool)``, then one more per entry of
    ``scales``: the object scaled by that factor about its centre (cut by the frame's edges), unrotated.

    Deterministic: the warps are a fixed list, as in the paper's rotation / flip / scale / blur set.
    """
    warps = [_WARPS[k % len(_WARPS)] for k in range(max(count, 0))] + [(0.0, False, float(s), 0.0) for s in scales]
    if not warps:
        return []
    mask = mask.astype(bool)
    background = inpaint_background(image, mask)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    centre = (float(xs.mean()), float(ys.mean()))
    copies = []
    for angle, flip, scale, blur in warps:
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        if flip:
            # Mirror about the object's centre column, then rotate / scale.
            mirror = np.array([[-1.0, 0.0, 2 * centre[0]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            matrix = matrix @ mirror
        obj = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        alpha = cv2.warpAffine(mask.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
        if blur > 0:
            obj = cv2.GaussianBlur(obj, (0, 0), blur)
        new_mask = alpha > 0.5
        out = background.copy()
        out[new_mask] = obj[new_mask]
        copies.append((out, new_mask))
    return copies
