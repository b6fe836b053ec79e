"""Mask files: reading label maps from the formats found in the wild, writing DAVIS palette PNGs.

A label map is a ``(H, W)`` uint8 array: 0 is background, 1..K are object ids, 255 is DAVIS "void".
Files and arrays follow one rule (:func:`to_label_map`): a map holding only 0 and 255 is one object;
floating-point maps, labels outside 0..255 and soft masks (many grey levels at the edges, as editors
and JPEG make them) are refused with the fix, unless a ``threshold`` binarises them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reusevos.errors import ReusevosError
from reusevos.io.files import write_atomically


def _davis_palette() -> np.ndarray:
    """The official DAVIS / PASCAL VOC colour map, ``(256, 3)`` uint8: 0 black, 1 (128, 0, 0), ...

    Each index's bits are spread over the three channels, most significant bit first, which gives
    levels 64, 128 and 192 (some code in the wild has 191 instead of 192; that is not DAVIS).
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        code = index
        for bit in range(8):
            for channel in range(3):
                palette[index, channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
    return palette


DAVIS_PALETTE: np.ndarray = _davis_palette()
VOID = 255
SOFT_LABELS = 8  # a map with more distinct labels than this, most of them covering few pixels, is a soft mask
_SOFT_AREA = 0.002  # "few pixels": under 0.2% of the image
_LOSSY = (".jpg", ".jpeg")
_THRESHOLD_HINT = "pass --threshold 128 (threshold=128 in Python) to binarise it, or save it as a palette PNG"


def read_mask(path: str | os.PathLike, threshold: int | None = None) -> np.ndarray:
    """Read a mask file as a ``(H, W)`` uint8 label map.

    Accepted: palette PNGs (labels are the palette indices), single-channel PNGs holding only 0 and
    255 (one object, DAVIS 2016), single-channel label PNGs (values are labels), 1-bit images, and
    RGB images whose colours are all DAVIS palette colours. With ``threshold``, any image (a feathered
    or JPEG mask too) becomes one object where its grey level is at least ``threshold``. Anything else
    raises ReusevosError.
    """
    path = Path(path)
    if not path.is_file():
        raise ReusevosError(f"mask file not found: {path}")
    if path.suffix.lower() in _LOSSY and threshold is None:
        raise ReusevosError(f"mask {path} is a JPEG: JPEG is lossy, so its edges hold many grey levels that would be "
                            f"read as objects; {_THRESHOLD_HINT}")
    try:
        with Image.open(path) as image:
            image.load()
            if threshold is not None:
                return to_label_map(np.array(image.convert("L")), f"mask {path}", threshold)
            mode = image.mode
            if mode in ("P", "PA"):
                return _refuse_soft(_labels_from_palette(image), f"mask {path}")
            if mode in ("RGB", "RGBA"):
                return _labels_from_rgb(np.array(image.convert("RGB")), path)
            if mode == "LA":
                image = image.getchannel(0)
            elif mode == "1":
                return np.array(image, dtype=np.uint8)
            array = np.array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ReusevosError(f"cannot read mask {path}: {exc}; give a PNG mask (palette or single-channel)") from exc
    return _labels_from_gray(array, path)


def to_label_map(mask, where: str = "the mask", threshold: float | None = None) -> np.ndarray:
    """A ``(H, W)`` uint8 label map from a mask array, by the rule files follow too.

    ``threshold``: one object (1) where the value is at least it. Otherwise bool maps are one object,
    integer maps are labels (0..255; holding only 0 and 255, one object), and floating-point maps, other
    values and soft masks (see :data:`SOFT_LABELS`) raise ReusevosError naming the fix.
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ReusevosError(f"{where} must be a (H, W) label map; got shape {array.shape}")
    if threshold is not None:
        return (array >= threshold).astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        raise ReusevosError(f"{where} holds floating-point values; give integer labels (0 = background, 1, 2, ... "
                            "= objects), or binarise it, e.g. (mask >= 0.5).astype(np.uint8)")
    if array.dtype.kind not in "iu":
        raise ReusevosError(f"{where} has dtype {array.dtype}; give integer labels (uint8)")
    if array.size and (array.min() < 0 or array.max() > VOID):
        raise ReusevosError(f"{where} holds labels from {array.min()} to {array.max()}; labels must be 0..255 "
                            "(0 = background, 255 = void)")
    labels = array.astype(np.uint8, copy=False)
    if set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()) in ({0, VOID}, {VOID}):
        return (labels > 0).astype(np.uint8)  # black and white: one object (DAVIS 2016)
    return _refuse_soft(labels, where)


def _refuse_soft(labels: np.ndarray, where: str) -> np.ndarray:
    """``labels`` unless they look like a soft mask: more than :data:`SOFT_LABELS` objects, most of them tiny, or
    more than three times as many (grey levels, not objects)."""
    counts = np.bincount(labels.ravel(), minlength=256)  # ~10x cheaper than np.unique on 480p masks
    objects = [v for v in np.flatnonzero(counts).tolist() if v not in (0, VOID)]
    small = [v for v in objects if counts[v] < _SOFT_AREA * labels.size]
    if len(objects) > 3 * SOFT_LABELS or (len(objects) > SOFT_LABELS and len(small) * 2 >= len(objects)):
        raise ReusevosError(f"{where} looks like a soft mask: {len(objects)} distinct labels, {len(small)} of them on "
                            f"fewer than {_SOFT_AREA:.1%} of the pixels each (grey levels at the edges); "
                            f"{_THRESHOLD_HINT}")
    return labels


def _labels_from_palette(image: Image.Image) -> np.ndarray:
    labels = np.array(image.getchannel(0) if image.mode == "PA" else image, dtype=np.uint8)
    palette = image.getpalette() or []
    if len(palette) >= 768 and palette[765:768] == [255, 255, 255]:
        values = set(np.unique(labels).tolist())
        if 255 in values and values <= {0, 255}:
            # A 0/255 mask saved with a grey palette (as PIL's convert("P") does): one object, not the
            # DAVIS "void" label 255, whose DAVIS colour is (224, 224, 192).
            return (labels > 0).astype(np.uint8)
    return labels


def _labels_from_gray(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 2:
        raise ReusevosError(f"mask {path} has shape {array.shape}; expected a single-channel image")
    return to_label_map(array, f"mask {path}")


def _labels_from_rgb(rgb: np.ndarray, path: Path) -> np.ndarray:
    grey = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    if grey:
        values = set(np.unique(rgb[..., 0]).tolist())
        # Grey DAVIS colours are indices 0, 56, 7, 63 = levels 0, 64, 128, 192: an RGB export of a
        # frame showing only object 7 is grey too, and is read as the palette mask it is.
        if not values <= {0, 64, 128, 192} or values <= {0}:
            return _labels_from_gray(rgb[..., 0], path)
    # An RGB export of a palette mask: map each colour back to its DAVIS index.
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    palette_codes = (
        (DAVIS_PALETTE[:, 0].astype(np.int32) << 16)
        | (DAVIS_PALETTE[:, 1].astype(np.int32) << 8)
        | DAVIS_PALETTE[:, 2]
    )
    lookup = {int(code): index for index, code in enumerate(palette_codes)}
    colours = np.unique(codes)
    unknown = [c for c in colours.tolist() if c not in lookup]
    if unknown:
        c = unknown[0]
        raise ReusevosError(
            f"mask {path} is an RGB image with colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) that is "
            "not in the DAVIS palette; save it as a palette PNG or a single-channel label PNG"
        )
    labels = np.zeros(codes.shape, dtype=np.uint8)
    for code in colours.tolist():
        labels[codes == code] = lookup[code]
    return labels


def write_mask(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a ``(H, W)`` label map as a palette PNG with the DAVIS palette.

    The file is written to a temporary name and renamed, so an interrupted write never leaves a
    truncated PNG behind.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ReusevosError(f"labels must be (H, W), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ReusevosError(f"labels must lie in 0..255 to be written as a palette PNG; got {labels.min()} to "
                            f"{labels.max()}")
    path = Path(path)
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(DAVIS_PALETTE.reshape(-1).tolist())  # turns the "L" image into "P"
    write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def object_ids(labels: np.ndarray) -> list[int]:
    """The object ids present in a label map, ascending, background excluded."""
    return [int(v) for v in np.unique(labels) if v != 0]
