"""DAVIS roots: the 2016 and 2017 layouts, layout detection, the 2017 writer, bad-input messages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reusevos.errors import ReusevosError
from reusevos.io.davis import DavisDataset, write_davis_sequence

SHARED = Path(os.environ.get("REUSEVOS_SHARED") or Path(__file__).resolve().parents[2] / "shared")
BLACKSWAN = SHARED / "data" / "davis2016-blackswan"
needs_blackswan = pytest.mark.skipif(
    not BLACKSWAN.is_dir(),
    reason=f"shared data not found under {SHARED} (set REUSEVOS_SHARED to the folder holding data/)",
)


def _clip(num_frames: int, h: int = 24, w: int = 32):
    # Smooth frames (JPEG keeps them close), each a different brightness.
    ramp = np.linspace(0, 120, w, dtype=np.float64)[None, :, None] + np.zeros((h, 1, 3))
    frames = np.stack([(ramp + 30 * t + 10 * np.arange(3)).astype(np.uint8) for t in range(num_frames)])
    labels = np.zeros((num_frames, h, w), dtype=np.uint8)
    labels[:, 2:8, 3:9] = 1
    labels[2:, 12:18, 20:26] = 3  # object 3 enters at frame 2; there is no object 2
    labels[:, -1, :] = 255  # void
    return frames, labels


@needs_blackswan
def test_reads_davis2016_layout():
    ds = DavisDataset(BLACKSWAN, split="val")
    assert ds.layout == "2016"
    assert ds.sequences == ["blackswan"] and len(ds) == 1 and "blackswan" in ds
    frames, masks = ds.frame_paths("blackswan"), ds.mask_paths("blackswan")
    assert len(frames) == len(masks) == 50
    assert frames[0] == BLACKSWAN / "JPEGImages/480p/blackswan/00000.jpg"
    assert masks[-1] == BLACKSWAN / "Annotations/480p/blackswan/00049.png"
    assert all(p.is_file() for p in frames + masks)
    assert ds.frame_ids("blackswan")[:2] == ["00000", "00001"]
    labels = ds.read_masks("blackswan")
    assert labels.shape == (50, 480, 854) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == {0, 1}  # 0/255 -> one object
    raw = np.array(Image.open(masks[10]))
    np.testing.assert_array_equal(labels[10], (raw > 0).astype(np.uint8))
    assert ds.object_ids("blackswan") == [1]


def _write_2016_root(root: Path) -> None:
    lines = []
    for seq, n in (("bear", 3), ("cat", 2)):
        (root / "JPEGImages/480p" / seq).mkdir(parents=True)
        (root / "Annotations/480p" / seq).mkdir(parents=True)
        for t in range(n):
            Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / f"JPEGImages/480p/{seq}/{t:05d}.jpg")
            mask = np.zeros((6, 8), np.uint8)
            mask[1:3, 1 + t : 4 + t] = 255
            Image.fromarray(mask).save(root / f"Annotations/480p/{seq}/{t:05d}.png")
            lines.append(f"/JPEGImages/480p/{seq}/{t:05d}.jpg /Annotations/480p/{seq}/{t:05d}.png")
    (root / "ImageSets/480p").mkdir(parents=True)
    (root / "ImageSets/480p/val.txt").write_text("\n".join(lines) + "\n")


def test_davis2016_split_file_groups_frames_by_sequence(tmp_path):
    _write_2016_root(tmp_path)
    ds = DavisDataset(tmp_path, "val")
    assert ds.layout == "2016" and ds.sequences == ["bear", "cat"]
    assert [p.name for p in ds.frame_paths("bear")] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert [p.name for p in ds.mask_paths("cat")] == ["00000.png", "00001.png"]
    masks = ds.read_masks("bear")
    assert masks.shape == (3, 6, 8) and masks.max() == 1 and masks[2, 1, 3:6].tolist() == [1, 1, 1]
    assert DavisDataset(tmp_path, "val", sequences=["cat"]).sequences == ["cat"]


def test_write_and_read_davis2017_layout(tmp_path):
    frames, labels = _clip(4)
    masks = [labels[0], None, labels[2], labels[3]]  # frame 1 unannotated
    assert write_davis_sequence(tmp_path, "toy", iter(frames), iter(masks), split="train") == 4
    assert (tmp_path / "ImageSets/2017/train.txt").read_text() == "toy\n"
    ds = DavisDataset(tmp_path, split="train")
    assert ds.layout == "2017" and ds.sequences == ["toy"]
    assert [p.name for p in ds.frame_paths("toy")] == [f"{t:05d}.jpg" for t in range(4)]
    assert [p.name for p in ds.mask_paths("toy")] == ["00000.png", "00002.png", "00003.png"]
    read = ds.read_masks("toy")
    np.testing.assert_array_equal(read, labels[[0, 2, 3]])  # palette PNGs round-trip exactly
    assert Image.open(ds.mask_paths("toy")[0]).mode == "P"
    assert ds.object_ids("toy") == [1, 3]  # a later object counts, void does not
    image = np.array(Image.open(ds.frame_paths("toy")[2]))
    assert image.shape == (24, 32, 3) and np.abs(image.astype(int) - frames[2]).mean() < 3  # JPEG


def test_second_sequence_is_appended_once_and_overwrite_is_explicit(tmp_path):
    frames, labels = _clip(3)
    write_davis_sequence(tmp_path, "a", frames, labels, split="val")
    write_davis_sequence(tmp_path, "b", frames, labels, split="val")
    with pytest.raises(ReusevosError, match="already exists"):
        write_davis_sequence(tmp_path, "a", frames, labels, split="val")
    write_davis_sequence(tmp_path, "a", frames[:2], labels[:2], split="val", overwrite=True)
    assert (tmp_path / "ImageSets/2017/val.txt").read_text().split() == ["a", "b"]
    assert len(DavisDataset(tmp_path, "val").frame_paths("a")) == 2  # old frames removed


def test_writer_rejects_mismatched_inputs(tmp_path):
    frames, labels = _clip(3)
    with pytest.raises(ValueError, match="masks ran out"):
        write_davis_sequence(tmp_path, "x", frames, labels[:2])
    with pytest.raises(ValueError, match="more masks"):
        write_davis_sequence(tmp_path, "y", frames[:2], labels)
    with pytest.raises(ValueError, match="mask 0 is"):
        write_davis_sequence(tmp_path, "z", frames, labels[:, :10])


def test_2017_layout_wins_when_both_split_files_exist(tmp_path):
    _write_2016_root(tmp_path)
    frames, labels = _clip(3)
    write_davis_sequence(tmp_path, "toy", frames, labels, split="val")
    ds = DavisDataset(tmp_path, "val")
    assert ds.layout == "2017" and ds.sequences == ["toy"]


def test_root_from_environment(tmp_path, monkeypatch):
    _write_2016_root(tmp_path)
    monkeypatch.setenv("REUSEVOS_DAVIS", str(tmp_path))
    assert DavisDataset(None, "val").sequences == ["bear", "cat"]
    monkeypatch.delenv("REUSEVOS_DAVIS")
    with pytest.raises(ReusevosError, match="set REUSEVOS_DAVIS"):
        DavisDataset(None, "val")


def test_bad_roots_splits_and_sequences(tmp_path):
    with pytest.raises(ReusevosError, match=r"is not a folder.*REUSEVOS_DAVIS"):
        DavisDataset(tmp_path / "missing")
    with pytest.raises(ReusevosError, match="holds no split files"):
        DavisDataset(tmp_path)
    _write_2016_root(tmp_path)
    with pytest.raises(ReusevosError, match=r"no split 'train'.*available splits: ImageSets/480p: val"):
        DavisDataset(tmp_path, "train")
    with pytest.raises(ReusevosError, match=r"dog not in split 'val'.*it lists: bear, cat"):
        DavisDataset(tmp_path, "val", sequences=["bear", "dog"])
    ds = DavisDataset(tmp_path, "val", sequences=["bear"])
    with pytest.raises(ReusevosError, match="'cat' is not among the selected sequences"):
        ds.frame_paths("cat")


def test_listed_sequence_without_frames_is_an_error(tmp_path):
    (tmp_path / "ImageSets/2017").mkdir(parents=True)
    (tmp_path / "ImageSets/2017/val.txt").write_text("ghost\n")
    with pytest.raises(ReusevosError, match=r"ghost is listed in .* frame folder .* is missing"):
        DavisDataset(tmp_path, "val")
