"""Exports: a run's masks in the formats other tools read, written frame by frame into the run's folder.

:data:`FORMATS`, each a class below; :class:`Exports` writes the chosen ones together. Paths are inside the
folder a run writes to (``OUT``, or ``OUT.partial`` until the run is complete: see :mod:`reusevos.io.outputs`):

- ``davis``: ``<frame>.png``, DAVIS palette PNGs (index = object id);
- ``binary``: ``binary/<id>/<frame>.png``, one 0/255 PNG per object and frame, from the object's start on;
- ``rgba``: ``rgba/<frame>.png``, the frame with alpha = the union of the objects (255 inside);
- ``webm``: ``matte.webm``, the same as a VP9 video with alpha (yuva420p); ``mov``: ``matte.mov``, ProRes 4444
  (yuva444p10le), for editors that do not read VP9's alpha;
- ``coco``: ``coco.json``, COCO-style: an image per frame, an annotation per object and frame with its mask as
  COCO RLE (``pycocotools.mask.encode``), its ``area`` and ``bbox``;
- ``youtube``: the YouTube-VOS layout, ``Annotations/<video>/<frame>.png`` (palette PNGs) and ``meta.json``
  (``{"videos": {video: {"objects": {id: {"frames": [frame names where the object is seen]}}}}}``).

The mattes (``rgba``, ``webm``, ``mov``) take ``feather``: the alpha's edge blurred by a Gaussian of that standard
deviation in pixels (0 = the mask exactly). A run that stops early still finishes the files it can with the
frames done (``coco.json``, ``meta.json``, the matte video), so nothing computed is lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from reusevos.errors import ReusevosError
from reusevos.io.files import write_atomically, write_json
from reusevos.io.writers import MaskWriter, MatteVideoWriter, check_matte_video, make_folder
from reusevos.io.youtube import annotations_folder

FORMATS = ("davis", "binary", "rgba", "webm", "mov", "coco", "youtube")
MATTES = ("rgba", "webm", "mov")  # the formats --feather changes


def check_formats(formats: Sequence[str], feather: float = 0.0) -> list[str]:
    """The formats in order without repeats, or a ReusevosError: unknown names, none, a feather without a matte,
    a transparent video this FFmpeg build cannot write with its alpha."""
    chosen = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise ReusevosError(f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)} (comma-separated)")
    if not chosen:
        raise ReusevosError(f"no format given; choose from {', '.join(FORMATS)} (comma-separated)")
    if feather < 0:
        raise ReusevosError(f"feather {feather:g}: give a blur in pixels, 0 or more")
    if feather and not set(chosen) & set(MATTES):
        raise ReusevosError(f"feather {feather:g} changes only the mattes ({', '.join(MATTES)}), and none is chosen; "
                            "add one to the formats or drop the feather")
    for video in ("webm", "mov"):
        if video in chosen:
            try:
                check_matte_video(f".{video}")
            except ReusevosError as exc:
                other = " ProRes 4444 with alpha (format mov) or" if video == "webm" else ""
                raise ReusevosError(f"cannot export {video}: {exc}; choose{other} PNG frames with alpha (rgba) "
                                    "instead") from None
    return chosen


def matte_alpha(labels: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """The alpha of a matte: 255 where ``labels`` ``(H, W)`` marks an object, 0 elsewhere, the edge blurred by a
    Gaussian of standard deviation ``feather`` pixels when it is positive; ``(H, W)`` uint8."""
    alpha = np.where(np.asarray(labels) > 0, 255, 0).astype(np.uint8)
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), float(feather))
    return alpha


class Export:
    """One format: :meth:`write` per frame, then :meth:`close` (complete) or :meth:`finish_partial` (stopped)."""

    def write(self, name: str, frame: np.ndarray, labels: np.ndarray, ids: Sequence[int]) -> None:
        """Frame ``name``: ``frame`` ``(H, W, 3)`` uint8 RGB, ``labels`` ``(H, W)`` uint8, ``ids`` the objects
        tracked or started on it."""
        raise NotImplementedError

    def close(self) -> None:
        """Write what waits for the last frame."""

    def finish_partial(self) -> None:
        """A stopped run: write what can be written of the frames done, quietly."""
        try:
            self.close()
        except (ReusevosError, OSError, ValueError):
            pass  # the run is failing already; its first error is the one to report


class DavisExport(Export):
    def __init__(self, folder: Path):
        self.masks = MaskWriter(folder)

    def write(self, name, frame, labels, ids):
        self.masks.write(name, labels)


class BinaryExport(Export):
    def __init__(self, folder: Path):
        self.folder = folder / "binary"

    def write(self, name, frame, labels, ids):
        for obj in ids:
            folder = self.folder / str(obj)
            if not folder.is_dir():
                make_folder(folder, f"the binary masks of object {obj}")
            write_png(folder / f"{name}.png", np.where(labels == obj, 255, 0).astype(np.uint8))


class RgbaExport(Export):
    def __init__(self, folder: Path, feather: float):
        self.folder, self.feather = folder / "rgba", feather
        make_folder(self.folder, "the RGBA frames")

    def write(self, name, frame, labels, ids):
        write_png(self.folder / f"{name}.png", np.dstack([frame, matte_alpha(labels, self.feather)]))


class MatteVideoExport(Export):
    def __init__(self, path: Path, fps: float, feather: float):
        self.video, self.feather = MatteVideoWriter(path, fps=fps), feather

    def write(self, name, frame, labels, ids):
        self.video.write(frame, matte_alpha(labels, self.feather))

    def close(self):
        self.video.close()


class CocoExport(Export):
    """``coco.json``; the annotations wait in a hidden file line by line, so memory does not grow with the video."""

    def __init__(self, folder: Path, video: str):
        from pycocotools import mask as rle  # only this format needs it

        self.rle, self.video = rle, video
        self.path = folder / "coco.json"
        self._lines_path = folder / ".coco-annotations.partial"
        try:
            self._lines = open(self._lines_path, "w", encoding="utf-8")
        except OSError as exc:
            raise ReusevosError(f"cannot write {self._lines_path}: {exc.strerror or exc}") from exc
        self.images: list[dict] = []
        self.objects: set[int] = set()
        self.count = 0

    def write(self, name, frame, labels, ids):
        image = len(self.images)
        height, width = labels.shape
        self.images.append({"id": image, "file_name": name, "video": self.video, "frame_index": image,
                            "height": height, "width": width})
        for obj in ids:
            encoded = self.rle.encode(np.asfortranarray(labels == obj, dtype=np.uint8))
            annotation = {"id": self.count, "image_id": image, "category_id": 1, "object_id": int(obj),
                          "segmentation": {"size": [int(v) for v in encoded["size"]],
                                           "counts": encoded["counts"].decode("ascii")},
                          "area": int(self.rle.area(encoded)), "bbox": [int(v) for v in self.rle.toBbox(encoded)],
                          "iscrowd": 0}
            try:
                self._lines.write(json.dumps(annotation) + "\n")
            except OSError as exc:
                raise ReusevosError(f"cannot write {self._lines_path}: {exc.strerror or exc}") from exc
            self.objects.add(int(obj))
            self.count += 1

    def close(self):
        if self._lines.closed:
            return
        self._lines.close()
        head = json.dumps({"info": {"description": f"reusevos masks of {self.video}", "mask_encoding": "COCO RLE"},
                           "categories": [{"id": 1, "name": "object"}], "objects": sorted(self.objects),
                           "images": self.images})

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as out, open(self._lines_path, encoding="utf-8") as lines:
                out.write(head[:-1] + ', "annotations": [')
                for k, line in enumerate(lines):
                    out.write(("," if k else "") + "\n" + line.rstrip("\n"))
                out.write("\n]}\n")

        write_atomically(self.path, write)
        self._lines_path.unlink()


class YoutubeExport(Export):
    def __init__(self, folder: Path, video: str):
        self.masks = MaskWriter(annotations_folder(folder, video))
        self.path, self.video = folder / "meta.json", video
        self.seen: dict[int, list[str]] = {}  # object id -> the frames it is seen on

    def write(self, name, frame, labels, ids):
        self.masks.write(name, labels)
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        for obj in present[present != 0].tolist():
            self.seen.setdefault(obj, []).append(name)

    def close(self):
        objects = {str(obj): {"frames": frames} for obj, frames in sorted(self.seen.items())}
        write_json(self.path, {"videos": {self.video: {"objects": objects}}})


class Exports:
    """The chosen formats (checked by :func:`check_formats`) of one video into ``folder``, written together.

    Args:
        formats: names from :data:`FORMATS`.
        folder: the folder the run writes to.
        video: the video's name (``coco`` and ``youtube`` record it; ``youtube`` names a folder after it).
        fps: the matte videos' frame rate.
        feather: the mattes' edge blur, pixels (see :func:`matte_alpha`).
    """

    def __init__(self, formats: Sequence[str], folder: str | os.PathLike, video: str, fps: float = 24.0,
                 feather: float = 0.0):
        folder = Path(folder)
        makers = {"davis": lambda: DavisExport(folder), "binary": lambda: BinaryExport(folder),
                  "rgba": lambda: RgbaExport(folder, feather),
                  "webm": lambda: MatteVideoExport(folder / "matte.webm", fps, feather),
                  "mov": lambda: MatteVideoExport(folder / "matte.mov", fps, feather),
                  "coco": lambda: CocoExport(folder, video), "youtube": lambda: YoutubeExport(folder, video)}
        self.exports = [makers[name]() for name in formats]

    def write(self, name: str, frame: np.ndarray, labels: np.ndarray, ids: Sequence[int]) -> None:
        for export in self.exports:
            export.write(name, frame, labels, ids)

    def close(self) -> None:
        for export in self.exports:
            export.close()

    def finish_partial(self) -> None:
        for export in self.exports:
            export.finish_partial()


def write_png(path: Path, array: np.ndarray) -> None:
    """A grey ``(H, W)`` or RGBA ``(H, W, 4)`` uint8 PNG, written atomically."""
    image = Image.fromarray(np.ascontiguousarray(array))
    write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))
