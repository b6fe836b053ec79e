"""YouTube-VOS folders: reading one split's folder, writing a video into one, and the submission zip.

The layout of one split (the folder ``valid/`` or ``train/`` of the download)::

    ROOT/JPEGImages/<video>/<frame>.jpg    the frames (every 5th frame of the video; valid_all_frames/ has all)
    ROOT/Annotations/<video>/<frame>.png   palette PNGs, index = object id, on annotated frames only (every 5th
                                           frame; valid annotates each object only on the frame it first appears)
    ROOT/meta.json                         {"videos": {video: {"objects": {id: {"category": ..., "frames": [...]}}}}}

An object starts on the first annotated frame that names it: :meth:`YoutubeDataset.start_masks` gives each such
frame's map with only the objects that start there. Later annotations of a started object (train's every-5th-frame
ground truth) are never given to the model. Results are written in the submission layout,
``OUT/Annotations/<video>/<frame>.png`` for every frame with the annotations' object ids (:func:`annotations_folder`,
the one place that names it), and :func:`write_submission_zip` packs them as the evaluation server expects: a zip
whose top level is ``Annotations/``.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from reusevos.errors import ReusevosError
from reusevos.io.datasets import SequenceIndex
from reusevos.io.davis import VOID_LABEL, check_sequence_name, write_sequence_files
from reusevos.io.files import write_atomically, write_json
from reusevos.io.frames import natural_key
from reusevos.io.masks import read_mask

ANNOTATION_EVERY = 5
"""YouTube-VOS annotates every 5th frame of a video."""

_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def annotations_folder(root: str | os.PathLike, video: str) -> Path:
    """``root/Annotations/<video>``: where a video's masks are, in the dataset and in results."""
    return Path(root) / "Annotations" / video


def is_youtube_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` looks like one YouTube-VOS split: ``JPEGImages/`` without a DAVIS ``ImageSets/``."""
    root = Path(root)
    return (root / "JPEGImages").is_dir() and not (root / "ImageSets").is_dir()


class YoutubeDataset(SequenceIndex):
    """One YouTube-VOS split's folder (see the module's docstring), with the interface ``segment_davis`` runs.

    Args:
        root: the folder holding ``JPEGImages/``, ``Annotations/`` and (optionally) ``meta.json``.
        sequences: a subset of the videos, in the order to use; ``None`` = all of them.

    The videos are those of ``meta.json`` (or, without it, the folders of ``JPEGImages/``), sorted by name.
    """

    layout = "youtube"

    def __init__(self, root: str | os.PathLike, sequences: Iterable[str] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.split = self.root.name
        frames_root = self.root / "JPEGImages"
        if not frames_root.is_dir():
            raise ReusevosError(f"{self.root} has no JPEGImages/ folder; give the folder of one YouTube-VOS split "
                                "(the one holding JPEGImages/, Annotations/ and meta.json, e.g. valid/)")
        self.meta = _read_meta(self.root / "meta.json")
        listed = sorted(self.meta) if self.meta else sorted(p.name for p in frames_root.iterdir() if p.is_dir())
        if not listed:
            raise ReusevosError(f"{frames_root} holds no video folders")
        if sequences is None:
            wanted = listed
        else:
            wanted = list(dict.fromkeys([sequences] if isinstance(sequences, str) else sequences))
            missing = [name for name in wanted if name not in set(listed)]
            if missing:
                shown = ", ".join(listed[:12]) + (", ..." if len(listed) > 12 else "")
                raise ReusevosError(f"video(s) {', '.join(missing)} not in {self.root}; it holds: {shown}")
        self._index = {name: self._list(name) for name in wanted}

    def __repr__(self) -> str:
        return f"YoutubeDataset(root={str(self.root)!r}, {len(self)} videos)"

    def start_masks(self, sequence: str) -> dict[str, np.ndarray]:
        """``{frame name: (H, W) uint8 label map}`` of the frames where objects start, in temporal order: each
        object on the first annotation that names it, and only there (the other objects of that annotation are
        background in its map; void 255 is background)."""
        started: set[int] = set()
        starts: dict[str, np.ndarray] = {}
        for path in self.mask_paths(sequence):
            labels = read_mask(path)
            present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
            new = [int(i) for i in present if i not in (0, VOID_LABEL) and i not in started]
            if new:
                starts[path.stem] = np.where(np.isin(labels, new), labels, 0).astype(np.uint8)
                started.update(new)
        if not starts:
            raise ReusevosError(f"video {sequence}: no annotation in {annotations_folder(self.root, sequence)} names "
                                "an object; each object needs a mask on the first frame it appears")
        return starts

    # --- internals ---------------------------------------------------------------------------
    def _unknown(self, sequence: str) -> str:
        return f"video '{sequence}' is not among the selected videos of {self.root}"

    def _list(self, name: str) -> tuple[list[Path], list[Path]]:
        frame_dir = self.root / "JPEGImages" / name
        if not frame_dir.is_dir():
            raise ReusevosError(f"video {name} is listed in {self.root / 'meta.json'} but its frame folder {frame_dir} "
                                "is missing")
        frames = sorted((p for p in frame_dir.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES),
                        key=lambda p: natural_key(p.name))
        if not frames:
            raise ReusevosError(f"frame folder {frame_dir} holds no .jpg or .png frames")
        mask_dir = annotations_folder(self.root, name)
        masks = sorted(mask_dir.glob("*.png"), key=lambda p: natural_key(p.name)) if mask_dir.is_dir() else []
        names = {p.stem for p in frames}
        stray = [p for p in masks if p.stem not in names]
        if stray:
            raise ReusevosError(f"annotation {stray[0]} is for frame {stray[0].stem!r}, which {frame_dir} does not "
                                "hold; remove it or add the frame")
        return frames, masks


def _read_meta(path: Path) -> dict[str, dict]:
    """``meta.json``'s videos (``{}`` when the file is absent)."""
    if not path.is_file():
        return {}
    try:
        videos = json.loads(path.read_text(encoding="utf-8"))["videos"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReusevosError(f"cannot read {path} ({exc}); a YouTube-VOS meta.json holds {{\"videos\": {{...}}}}; fix "
                            "or remove it (the videos are then JPEGImages' folders)") from None
    if not isinstance(videos, dict):
        raise ReusevosError(f"{path}: \"videos\" is not a mapping of video names")
    return videos


def write_youtube_video(root: str | os.PathLike, name: str, frames: Iterable[np.ndarray],
                        labels: Iterable[np.ndarray], *, every: int = ANNOTATION_EVERY, category: str = "object",
                        jpeg_quality: int = 95, overwrite: bool = False) -> int:
    """Write one video into a YouTube-VOS split folder ``root``: every frame as ``JPEGImages/<name>/00000.jpg ...``,
    the label map of every ``every``-th frame as ``Annotations/<name>/<frame>.png``, and the video's objects in
    ``meta.json`` (each with the annotated frames it is seen on; an object no annotation shows is left out).

    ``frames`` and ``labels`` are ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8, one each per frame, consumed one at a
    time. Returns the number of frames written.
    """
    root = Path(root)
    check_sequence_name(name)
    if every < 1:
        raise ValueError(f"every {every}: annotate every 1st frame or more")
    seen: dict[int, list[str]] = {}

    def annotations() -> Iterator[np.ndarray | None]:
        for index, label_map in enumerate(labels):
            if index % every:
                yield None
                continue
            for obj in np.flatnonzero(np.bincount(np.asarray(label_map).ravel(), minlength=256)).tolist():
                if obj not in (0, VOID_LABEL):
                    seen.setdefault(obj, []).append(f"{index:05d}")
            yield label_map

    count = write_sequence_files(root / "JPEGImages" / name, annotations_folder(root, name), frames, annotations(),
                                 jpeg_quality=jpeg_quality, overwrite=overwrite)
    meta_path = root / "meta.json"
    videos = _read_meta(meta_path)
    videos[name] = {"objects": {str(obj): {"category": category, "frames": names}
                                for obj, names in sorted(seen.items())}}
    write_json(meta_path, {"videos": dict(sorted(videos.items()))})
    return count


def write_submission_zip(results: str | os.PathLike, path: str | os.PathLike, videos: Iterable[str]) -> int:
    """Zip ``results/Annotations/<video>/*.png`` of ``videos`` into ``path`` as the YouTube-VOS server expects
    (the top level is ``Annotations/``, with a folder entry for it and for each video, as ``zip -r`` writes);
    written atomically. Returns the number of masks."""
    results = Path(results)
    entries: list[tuple[Path, str]] = []
    for video in videos:
        folder = annotations_folder(results, video)
        masks = sorted(folder.glob("*.png"), key=lambda p: natural_key(p.name)) if folder.is_dir() else []
        if not masks:
            raise ReusevosError(f"{folder} holds no masks; segment video {video} before making the zip")
        entries += [(mask, f"Annotations/{video}/{mask.name}") for mask in masks]

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("Annotations/", b"")
            folders = set()
            for mask, name in entries:
                folder = name.rsplit("/", 1)[0] + "/"
                if folder not in folders:
                    archive.writestr(folder, b"")
                    folders.add(folder)
                archive.write(mask, name)

    write_atomically(path, write)
    return len(entries)
