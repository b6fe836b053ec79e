"""Datasets as a dataset run reads them: :class:`SequenceIndex`, what every layout offers (its sequences, each with its
frame and annotation files), and :func:`open_dataset`, which opens a DAVIS root or a YouTube-VOS split's folder."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reusevos.errors import ReusevosError
from reusevos.io.frames import read_image

if TYPE_CHECKING:
    from reusevos.io.davis import DavisDataset
    from reusevos.io.youtube import YoutubeDataset

LAYOUTS = ("davis", "youtube")


class SequenceIndex:
    """A dataset's sequences in order, each with its frame files and annotation files (``_index``, filled by the
    layout's class, ``{name: (frame paths, mask paths)}``, both in temporal order)."""

    root: Path
    _index: dict[str, tuple[list[Path], list[Path]]]

    @property
    def sequences(self) -> list[str]:
        """The sequence names, in the dataset's order (or the order asked for)."""
        return list(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self):
        return iter(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def frame_paths(self, sequence: str) -> list[Path]:
        """The sequence's frame files, in temporal order."""
        return list(self._entry(sequence)[0])

    def mask_paths(self, sequence: str) -> list[Path]:
        """The sequence's annotation files, in temporal order (annotated frames only: test splits may annotate
        only the first, YouTube-VOS every 5th)."""
        return list(self._entry(sequence)[1])

    def frames(self, sequence: str) -> Iterator[tuple[str, np.ndarray]]:
        """``(frame name, (H, W, 3) uint8 RGB)`` of the sequence, decoded one at a time."""
        for path in self.frame_paths(sequence):
            yield path.stem, read_image(path)

    def _entry(self, sequence: str) -> tuple[list[Path], list[Path]]:
        try:
            return self._index[sequence]
        except KeyError:
            raise ReusevosError(self._unknown(sequence)) from None

    def _unknown(self, sequence: str) -> str:
        return f"sequence '{sequence}' is not among the selected sequences of {self.root}"
DAVIS_SPLIT = "val"
"""The DAVIS split read when none is named."""


def open_dataset(root: str | os.PathLike | None, split: str | None = None, sequences: Iterable[str] | None = None,
                 layout: str = "auto") -> DavisDataset | YoutubeDataset:
    """The dataset at ``root`` in ``layout`` (``davis``, ``youtube``, or ``auto``: a root with ``ImageSets/`` is
    DAVIS, one with ``JPEGImages/`` and no ``ImageSets/`` is a YouTube-VOS split, and so is ``root/<split>/``).

    ``split`` is the DAVIS split (default ``val``); for YouTube-VOS, a split's folder under ``root`` (``valid``),
    or nothing when ``root`` is that folder. ``root`` None is ``$REUSEVOS_DAVIS`` (DAVIS only).
    """
    from reusevos.io.davis import DavisDataset  # they build on SequenceIndex, so they are imported here
    from reusevos.io.youtube import YoutubeDataset, is_youtube_folder

    if layout not in ("auto", *LAYOUTS):
        raise ReusevosError(f"--layout {layout!r}: choose auto, {' or '.join(LAYOUTS)}")
    if root is None:
        if layout == "youtube":
            raise ReusevosError("a YouTube-VOS run needs its folder: give DATASET_ROOT (the folder of one split, e.g. "
                                "valid/)")
        return DavisDataset(None, split or DAVIS_SPLIT, sequences)
    root = Path(root).expanduser()
    nested = root / split if split else None
    if layout == "auto":
        if is_youtube_folder(root) or (nested is not None and is_youtube_folder(nested)):
            layout = "youtube"
        elif not (root / "ImageSets").is_dir() and root.is_dir():
            raise ReusevosError(f"{root} is neither a DAVIS root (ImageSets/, JPEGImages/480p/, Annotations/480p/) "
                                "nor a YouTube-VOS split's folder (JPEGImages/, Annotations/, meta.json)")
        else:
            layout = "davis"
    if layout == "davis":
        return DavisDataset(root, split or DAVIS_SPLIT, sequences)
    if nested is not None and not is_youtube_folder(root):
        if not nested.is_dir():
            raise ReusevosError(f"--split {split}: {root} has no folder {split}/; give the folder of one YouTube-VOS "
                                "split (e.g. valid/), or its parent with --split valid")
        return YoutubeDataset(nested, sequences)
    if (root / "ImageSets").is_dir():
        raise ReusevosError(f"{root} is a DAVIS root (it holds ImageSets/); drop --layout youtube")
    if split and split != root.name:
        raise ReusevosError(f"--split {split}: {root} is the folder of one YouTube-VOS split ({root.name}); drop --split "
                            "or give the parent folder with it")
    return YoutubeDataset(root, sequences)
