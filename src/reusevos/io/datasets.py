"""Opening a dataset folder of either layout a dataset run reads: a DAVIS root or a YouTube-VOS split's folder."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from reusevos.errors import ReusevosError
from reusevos.io.davis import DavisDataset
from reusevos.io.youtube import YoutubeDataset, is_youtube_folder

LAYOUTS = ("davis", "youtube")
DAVIS_SPLIT = "val"
"""The DAVIS split read when none is named."""


def open_dataset(root: str | os.PathLike | None, split: str | None = None, sequences: Iterable[str] | None = None,
                 layout: str = "auto") -> DavisDataset | YoutubeDataset:
    """The dataset at ``root`` in ``layout`` (``davis``, ``youtube``, or ``auto``: a root with ``ImageSets/`` is
    DAVIS, one with ``JPEGImages/`` and no ``ImageSets/`` is a YouTube-VOS split, and so is ``root/<split>/``).

    ``split`` is the DAVIS split (default ``val``); for YouTube-VOS, a split's folder under ``root`` (``valid``),
    or nothing when ``root`` is that folder. ``root`` None is ``$REUSEVOS_DAVIS`` (DAVIS only).
    """
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
