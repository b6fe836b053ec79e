"""DAVIS dataset roots: reading both official layouts, writing the DAVIS 2017 layout.

DAVIS 2017 layout::

    ROOT/ImageSets/2017/<split>.txt            one sequence name a line
    ROOT/JPEGImages/<resolution>/<seq>/*.jpg
    ROOT/Annotations/<resolution>/<seq>/*.png  palette PNGs, labels 0..K, 255 = void

DAVIS 2016 layout::

    ROOT/ImageSets/<resolution>/<split>.txt    lines "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png"
    ROOT/JPEGImages/<resolution>/<seq>/*.jpg
    ROOT/Annotations/<resolution>/<seq>/*.png  single-channel masks, 0 / 255 = one object

The dataset lists files and reads them on request (:meth:`DavisDataset.frames` streams a sequence);
:func:`load_sequence` holds one sequence with its ground truth in memory. Label maps are ``(H, W)`` uint8.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from reusevos.errors import ReusevosError
from reusevos.io.datasets import SequenceIndex
from reusevos.io.frames import read_image
from reusevos.io.masks import read_mask, write_mask

DAVIS_ENV = "REUSEVOS_DAVIS"
"""Environment variable naming the default DAVIS root."""

VOID_LABEL = 255
"""Label of "void" pixels in DAVIS 2017 annotations (object borders that are not scored)."""

_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_END = object()


class DavisDataset(SequenceIndex):
    """A DAVIS root in the 2017 or the 2016 layout, restricted to one split.

    Args:
        root: the folder holding ``ImageSets``, ``JPEGImages`` and ``Annotations``; ``None`` reads
            the ``REUSEVOS_DAVIS`` environment variable.
        split: the split file's name without ``.txt`` (``train``, ``val``, ...).
        sequences: a subset of the split's sequences, in the order to use; ``None`` = all of them.
        resolution: the resolution folder (``480p``; ``1080p`` or ``Full-Resolution`` where present).

    The layout is detected: ``ImageSets/2017/<split>.txt`` means DAVIS 2017 and wins when both
    exist; otherwise ``ImageSets/<resolution>/<split>.txt`` means DAVIS 2016.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "val",
        sequences: Iterable[str] | None = None,
        resolution: str = "480p",
    ) -> None:
        if root is None:
            env = os.environ.get(DAVIS_ENV, "")
            if not env:
                raise ReusevosError(
                    f"no DAVIS root given; pass its folder (DAVIS_ROOT or --davis DIR, as the command takes it) or set "
                    f"{DAVIS_ENV}=DIR"
                )
            root = env
        self.root = Path(root).expanduser()
        self.split = split
        self.resolution = resolution
        if not self.root.is_dir():
            raise ReusevosError(
                f"DAVIS root {self.root} is not a folder; pass the folder that holds ImageSets/, "
                f"JPEGImages/ and Annotations/ (the command's DAVIS root or {DAVIS_ENV}=DIR)"
            )
        split_2017 = self.root / "ImageSets" / "2017" / f"{split}.txt"
        split_2016 = self.root / "ImageSets" / resolution / f"{split}.txt"
        # name -> (frame paths, mask paths), in split order
        self._index: dict[str, tuple[list[Path], list[Path]]] = {}
        if split_2017.is_file():
            self.layout = "2017"
            self.split_file = split_2017
            names = self._read_names_2017(split_2017)
            wanted = self._select(names, sequences)
            for name in wanted:
                self._index[name] = self._list_2017(name)
        elif split_2016.is_file():
            self.layout = "2016"
            self.split_file = split_2016
            listed = self._read_pairs_2016(split_2016)
            wanted = self._select(list(listed), sequences)
            for name in wanted:
                self._index[name] = listed[name]
        else:
            raise ReusevosError(
                f"DAVIS root {self.root} has no split '{split}': looked for {split_2017} and "
                f"{split_2016}; {self._available_splits()}"
            )

    def __repr__(self) -> str:
        return (
            f"DavisDataset(root={str(self.root)!r}, split={self.split!r}, layout={self.layout!r}, "
            f"{len(self)} sequences)"
        )

    def start_masks(self, sequence: str) -> dict[str, np.ndarray]:
        """What the semi-supervised protocol gives: the first annotation (void as background), nothing later."""
        first = self.mask_paths(sequence)[0]
        labels = self.read_mask(first)
        return {first.stem: np.where(labels == VOID_LABEL, 0, labels).astype(np.uint8)}

    def frame_ids(self, sequence: str) -> list[str]:
        """The annotated frames' names without extension (``00000``, ...): the names results use."""
        return [p.stem for p in self._entry(sequence)[1]]

    def read_mask(self, path: str | os.PathLike) -> np.ndarray:
        """One annotation as a ``(H, W)`` uint8 label map in this layout's convention.

        DAVIS 2016 masks become 0 / 1 (any non-zero value is the one object); DAVIS 2017 labels are
        kept as stored, void pixels included as ``VOID_LABEL``.
        """
        path = Path(path)
        if self.layout == "2016":
            return _read_binary_mask(path)
        return read_mask(path)

    def read_masks(self, sequence: str) -> np.ndarray:
        """All annotations of a sequence as a ``(T, H, W)`` uint8 array (T = number of mask files)."""
        paths = self._entry(sequence)[1]
        if not paths:
            raise ReusevosError(f"sequence {sequence} has no annotations under {self._mask_dir(sequence)}")
        first = self.read_mask(paths[0])
        masks = np.empty((len(paths), *first.shape), dtype=np.uint8)
        masks[0] = first
        for t, path in enumerate(paths[1:], start=1):
            mask = self.read_mask(path)
            if mask.shape != first.shape:
                raise ReusevosError(
                    f"annotation {path} is {mask.shape[1]}x{mask.shape[0]} but {paths[0].name} of the "
                    f"same sequence is {first.shape[1]}x{first.shape[0]}; all masks of a sequence must "
                    "share one size"
                )
            masks[t] = mask
        return masks

    def object_ids(self, sequence: str) -> list[int]:
        """The object ids annotated anywhere in the sequence, ascending (background and void excluded)."""
        present = np.zeros(256, dtype=np.int64)
        for path in self._entry(sequence)[1]:  # one mask at a time: bincount works in 8-byte ints
            present += np.bincount(self.read_mask(path).reshape(-1), minlength=256)
        return [int(i) for i in np.flatnonzero(present) if i != 0 and i != VOID_LABEL]

    # --- internals ---------------------------------------------------------------------------

    def _unknown(self, sequence: str) -> str:
        return f"sequence '{sequence}' is not among the selected sequences of split '{self.split}' in {self.split_file}"

    def _mask_dir(self, sequence: str) -> Path:
        return self.root / "Annotations" / self.resolution / sequence

    def _select(self, names: list[str], sequences: Iterable[str] | None) -> list[str]:
        if sequences is None:
            return names
        if isinstance(sequences, str):
            sequences = [sequences]
        wanted = list(dict.fromkeys(sequences))
        known = set(names)
        missing = [s for s in wanted if s not in known]
        if missing:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ReusevosError(
                f"sequence(s) {', '.join(missing)} not in split '{self.split}' ({self.split_file}); "
                f"it lists: {shown or 'nothing'}"
            )
        return wanted

    @staticmethod
    def _read_names_2017(split_file: Path) -> list[str]:
        text = split_file.read_text(encoding="utf-8")
        return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))

    def _list_2017(self, name: str) -> tuple[list[Path], list[Path]]:
        frame_dir = self.root / "JPEGImages" / self.resolution / name
        if not frame_dir.is_dir():
            raise ReusevosError(
                f"sequence {name} is listed in {self.split_file} but its frame folder {frame_dir} is missing"
            )
        frames = sorted(p for p in frame_dir.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
        if not frames:
            raise ReusevosError(f"frame folder {frame_dir} holds no .jpg or .png frames")
        mask_dir = self._mask_dir(name)
        masks = sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []
        return frames, masks

    def _read_pairs_2016(self, split_file: Path) -> dict[str, tuple[list[Path], list[Path]]]:
        listed: dict[str, tuple[list[Path], list[Path]]] = {}
        for number, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) > 2:
                raise ReusevosError(
                    f"{split_file} line {number} has {len(parts)} fields; DAVIS 2016 split files hold "
                    "'<frame path> <mask path>' a line"
                )
            frame = self.root / parts[0].lstrip("/")
            frames, masks = listed.setdefault(frame.parent.name, ([], []))
            frames.append(frame)
            if len(parts) == 2:
                masks.append(self.root / parts[1].lstrip("/"))
        return listed

    def _available_splits(self) -> str:
        found = []
        sets = self.root / "ImageSets"
        if sets.is_dir():
            for folder in sorted(p for p in sets.iterdir() if p.is_dir()):
                names = sorted(p.stem for p in folder.glob("*.txt"))
                if names:
                    found.append(f"ImageSets/{folder.name}: {', '.join(names)}")
        if not found:
            return f"{sets} holds no split files; is {self.root} a DAVIS root?"
        return "available splits: " + "; ".join(found)


def _read_binary_mask(path: Path) -> np.ndarray:
    """A DAVIS 2016 mask (0 / 255, sometimes stored with an alpha channel) as 0 / 1 labels."""
    if not path.is_file():
        raise ReusevosError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.array(image) if mode in ("L", "1", "I", "I;16") else None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ReusevosError(f"cannot read mask {path}: {exc}; give a PNG mask") from exc
    if array is None:  # alpha channel, palette or RGB: the general reader knows these
        array = read_mask(path)
    if array.ndim != 2:
        raise ReusevosError(f"mask {path} has shape {array.shape}; expected a single-channel image")
    return (array != 0).astype(np.uint8)


def write_davis_sequence(
    root: str | os.PathLike,
    name: str,
    frames: Iterable[np.ndarray],
    masks: Iterable[np.ndarray | None],
    *,
    split: str = "train",
    resolution: str = "480p",
    jpeg_quality: int = 95,
    overwrite: bool = False,
) -> int:
    """Write one sequence into a DAVIS 2017-layout root and list it in ``ImageSets/2017/<split>.txt``.

    Args:
        root: the dataset root (created if needed).
        name: the sequence name (a folder name).
        frames: ``(H, W, 3)`` uint8 RGB images, consumed one at a time.
        masks: one entry per frame: a ``(H, W)`` label map (written as a DAVIS palette PNG) or ``None``
            for an unannotated frame.
        split: the split file the name is appended to (once).
        overwrite: replace an existing sequence of that name instead of refusing.

    Files are named ``00000.jpg`` / ``00000.png`` by frame index. Returns the number of frames written.
    """
    root = Path(root)
    check_sequence_name(name)
    count = write_sequence_files(root / "JPEGImages" / resolution / name, root / "Annotations" / resolution / name,
                                 frames, masks, jpeg_quality=jpeg_quality, overwrite=overwrite)

    split_file = root / "ImageSets" / "2017" / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    names = split_file.read_text(encoding="utf-8").split() if split_file.is_file() else []
    if name not in names:
        text = split_file.read_text(encoding="utf-8") if split_file.is_file() else ""
        lead = "\n" if text and not text.endswith("\n") else ""
        with open(split_file, "a", encoding="utf-8") as handle:
            handle.write(f"{lead}{name}\n")
    return count


def check_sequence_name(name: str) -> None:
    """A sequence name is one folder name."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"invalid sequence name {name!r}")


def write_sequence_files(frame_dir: Path, mask_dir: Path, frames: Iterable[np.ndarray],
                         masks: Iterable[np.ndarray | None], *, jpeg_quality: int = 95, overwrite: bool = False) -> int:
    """One sequence's files in either dataset layout: ``frame_dir/00000.jpg ...`` and, where ``masks`` gives a
    ``(H, W)`` label map rather than None, ``mask_dir/00000.png`` (a DAVIS palette PNG). Folders holding files are
    refused unless ``overwrite`` (their frames and masks are removed first). Returns the number of frames."""
    for folder in (frame_dir, mask_dir):
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise ReusevosError(f"{folder} already exists and is not empty; pass --overwrite (overwrite=True in Python) to replace it")
            for old in folder.iterdir():
                if old.is_file() and old.suffix.lower() in _FRAME_SUFFIXES:
                    old.unlink()
        folder.mkdir(parents=True, exist_ok=True)

    count = 0
    mask_iter = iter(masks)
    for index, frame in enumerate(frames):
        try:
            mask = next(mask_iter)
        except StopIteration:
            raise ValueError(f"masks ran out at frame {index}; give one entry (or None) per frame") from None
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {index} must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        stem = f"{index:05d}"
        try:
            Image.fromarray(frame).save(frame_dir / f"{stem}.jpg", quality=jpeg_quality)
        except OSError as exc:
            raise ReusevosError(f"cannot write {frame_dir / (stem + '.jpg')}: {exc}") from exc
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != frame.shape[:2]:
                raise ValueError(f"mask {index} is {mask.shape}, frame {index} is {frame.shape[:2]}")
            write_mask(mask_dir / f"{stem}.png", mask)
        count += 1
    if next(mask_iter, _END) is not _END:
        raise ValueError(f"more masks than the {count} frames given")
    return count


@dataclass
class SequenceData:
    """One sequence held in memory: ``frames`` ``(T, H, W, 3)`` uint8 RGB, ``ground_truth`` ``(T, H, W)``
    uint8 (255 = void), ``start_masks`` frame index -> ``(H, W)`` label map that starts objects (the
    semi-supervised protocol: the first frame's annotation, void as background)."""

    name: str
    frames: np.ndarray
    ground_truth: np.ndarray
    frame_ids: list[str]
    start_masks: dict[int, np.ndarray]

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:3])

    @property
    def num_objects(self) -> int:
        return sum(len([i for i in np.unique(m) if i != 0]) for m in self.start_masks.values())


def load_sequence(dataset: DavisDataset, sequence: str, max_frames: int | None = None,
                  max_size: int | None = None) -> SequenceData:
    """Decode a sequence's frames and ground truth (the first ``max_frames``; frames whose longer side
    exceeds ``max_size`` are shrunk by area averaging, the ground truth by nearest neighbour)."""
    frame_paths = dataset.frame_paths(sequence)
    mask_paths = dataset.mask_paths(sequence)
    if len(mask_paths) != len(frame_paths):
        raise ReusevosError(f"sequence {sequence} has annotations for {len(mask_paths)} of its {len(frame_paths)} "
                            "frames; scoring every frame needs a split with full ground truth (val)")
    if max_frames is not None:
        frame_paths, mask_paths = frame_paths[:max_frames], mask_paths[:max_frames]
    frames, masks = [], []
    for frame_path, mask_path in zip(frame_paths, mask_paths):
        frame = read_image(frame_path)
        mask = dataset.read_mask(mask_path)
        if mask.shape != frame.shape[:2]:
            raise ReusevosError(f"annotation {mask_path} is {mask.shape[1]}x{mask.shape[0]} but frame {frame_path} "
                                f"is {frame.shape[1]}x{frame.shape[0]}")
        if max_size and max(frame.shape[:2]) > max_size:
            scale = max_size / max(frame.shape[:2])
            size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        frames.append(frame)
        masks.append(mask)
    if len(frames) < 3:
        raise ReusevosError(f"sequence {sequence}: {len(frames)} frame(s); scoring leaves out the first and the last "
                            "frame, so at least 3 are needed")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ReusevosError(f"the frames of sequence {sequence} differ in size: {sorted(shapes)}")
    ground_truth = np.stack(masks)
    first = np.where(ground_truth[0] == VOID_LABEL, 0, ground_truth[0]).astype(np.uint8)
    if not first.any():
        raise ReusevosError(f"the first annotation of sequence {sequence} marks no object")
    return SequenceData(sequence, np.stack(frames), ground_truth, [p.stem for p in mask_paths], {0: first})
